"""The collector through its real entry point: files load back, runs are reproducible."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from wsrl_wm import collect as collect_module
from wsrl_wm.collect import TrainingBudget, collect
from wsrl_wm.data import load_dataset
from wsrl_wm.errors import WsrlError

TINY_BUDGET = TrainingBudget(target_score=1e9, max_train_steps=600, random_steps=300,
                             eval_interval=300, eval_episodes=1, batch_size=64)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "wsrl_wm.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_random_collection_reads_back(tmp_path):
    out = tmp_path / "hopper-random.hdf5"
    result = run_cli("collect", "--env", "Hopper-v5", "--quality", "random", "--steps", "5000",
                     "--seed", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = load_dataset(str(out))
    assert len(data["observations"]) == 5000
    assert data["observations"].shape == (5000, 11) and data["actions"].shape == (5000, 3)
    with h5py.File(out) as f:
        attrs = dict(f.attrs)
    assert (attrs["env"], attrs["quality"], attrs["seed"]) == ("Hopper-v5", "random", 3)
    assert attrs["behaviour_score"] < 5  # uniform actions fall over at once
    ends = data["terminals"] | data["timeouts"]
    assert data["terminals"].sum() > 10 and ends[-1]
    chained = np.all(data["next_observations"][:-1] == data["observations"][1:], axis=1)
    np.testing.assert_array_equal(chained, ~ends[:-1])  # successors chain inside episodes only
    assert not list(tmp_path.glob("*.tmp"))


def test_same_seed_same_file_other_seed_differs(tmp_path):
    paths = [tmp_path / f"{i}.hdf5" for i in range(3)]
    for path, seed in zip(paths, (0, 0, 1), strict=True):
        collect("Hopper-v5", "random", 300, seed, str(path))
    a, b, c = (load_dataset(str(p)) for p in paths)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["actions"], c["actions"])


@pytest.mark.parametrize("quality", ["medium", "medium-replay", "expert"])
def test_trained_qualities_run_on_a_tiny_budget(tmp_path, quality):
    out = tmp_path / f"{quality}.hdf5"
    metadata = collect("Hopper-v5", quality, 200, 0, str(out), TINY_BUDGET)
    data = load_dataset(str(out))
    # The budget stops training at 600 steps; medium-replay is exactly that training buffer.
    expected_rows = 600 if quality == "medium-replay" else 200
    assert len(data["rewards"]) == metadata["steps"] == expected_rows
    assert np.isfinite(metadata["policy_eval_score"])


def test_failed_collection_leaves_existing_file_untouched(tmp_path, monkeypatch):
    out = tmp_path / "keep.hdf5"
    collect("Hopper-v5", "random", 50, 0, str(out))
    before = out.read_bytes()

    def broken_write(path, arrays, attrs):
        with open(str(path) + ".tmp", "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(collect_module, "write_d4rl_file", broken_write)
    with pytest.raises(KeyboardInterrupt):
        collect("Hopper-v5", "random", 50, 1, str(out))
    assert out.read_bytes() == before


@pytest.mark.parametrize(("args", "message"), [
    (["--env", "Nope-v5", "--quality", "random", "--steps", "10"], "unknown env"),
    (["--env", "antmaze-umaze-v2", "--quality", "random", "--steps", "10"], "come from Minari"),
    (["--env", "PointMaze_UMaze-v3", "--quality", "random", "--steps", "10"],
     "unknown PointMaze quality"),
    (["--env", "Hopper-v5", "--quality", "random", "--steps", "0"], "--steps must be positive"),
])
def test_cli_bad_input_one_line_nonzero_exit(tmp_path, args, message):
    result = run_cli("collect", *args, "--out", str(tmp_path / "x.hdf5"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "x.hdf5").exists()


def test_unknown_quality_raises():
    with pytest.raises(WsrlError, match="unknown quality"):
        collect("Hopper-v5", "superb", 10, 0, "unused.hdf5")
