"""The collector through its real entry point: files load back, runs are reproducible."""

import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from wsrl_wm.collect import TrainingBudget, collect
from wsrl_wm.collect import behaviour as collect_module
from wsrl_wm.data import load_dataset
from wsrl_wm.errors import WsrlError


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
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_same_seed_same_file_other_seed_differs(tmp_path):
    paths = [tmp_path / f"{i}.hdf5" for i in range(3)]
    for path, seed in zip(paths, (0, 0, 1), strict=True):
        collect("Hopper-v5", "random", 300, seed, str(path))
    a, b, c = (load_dataset(str(p)) for p in paths)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["actions"], c["actions"])


class ScriptedEvaluations:
    """Stands in for the collector's evaluation: returns scripted scores, records how it was
    called and a copy of the actor it scored (to tell which policy wrote the data)."""

    def __init__(self, scores):
        self.scores, self.calls, self.actors = list(scores), [], []

    def __call__(self, actor, env_name, episodes, seed, deterministic=True):
        self.calls.append(deterministic)
        self.actors.append({k: v.clone() for k, v in actor.state_dict().items()})
        return {"eval/normalized_score": self.scores[len(self.calls) - 1]}


SCRIPTED_BUDGET = TrainingBudget(target_score=15, expert_score=25, max_train_steps=600,
                                 random_steps=300, eval_interval=100, eval_episodes=1,
                                 batch_size=64)


@pytest.mark.parametrize(("quality", "rows", "score"),
                         [("medium", 200, 20.0), ("medium-replay", 500, 20.0),
                          ("expert", 200, 30.0)])
def test_expert_trains_past_medium(tmp_path, monkeypatch, quality, rows, score):
    # Evaluations at 400, 500, 600 steps score 10, 20, 30: medium stops at 20 (≥ 15, after
    # 500 training steps, which is the medium-replay buffer), expert goes on to 30 (≥ 25).
    monkeypatch.setattr(collect_module, "evaluate", ScriptedEvaluations([10.0, 20.0, 30.0]))
    out = tmp_path / f"{quality}.hdf5"
    metadata = collect("Hopper-v5", quality, 200, 0, str(out), SCRIPTED_BUDGET)
    assert len(load_dataset(str(out))["rewards"]) == metadata["steps"] == rows
    assert metadata["policy_eval_score"] == score and metadata["target_reached"]


def test_collapsed_policy_is_not_the_one_that_writes_the_data(tmp_path, monkeypatch, capsys):
    # A seen collapse: 20.9 at one evaluation, 1.48 at the last, target 40 never reached.
    evaluations = ScriptedEvaluations([5.0, 20.9, 1.48])
    monkeypatch.setattr(collect_module, "evaluate", evaluations)
    used = {}
    real_rollout = collect_module.rollout

    def spy_rollout(actor, env_name, steps, seed):
        used["actor"] = {k: v.clone() for k, v in actor.state_dict().items()}
        return real_rollout(actor, env_name, steps, seed)

    monkeypatch.setattr(collect_module, "rollout", spy_rollout)
    budget = TrainingBudget(target_score=40, max_train_steps=600, random_steps=300,
                            eval_interval=100, eval_episodes=1, batch_size=64)
    metadata = collect("Hopper-v5", "medium", 100, 0, str(tmp_path / "m.hdf5"), budget)
    assert evaluations.calls == [False, False, False]  # the stochastic policy is judged
    assert metadata["policy_eval_score"] == 20.9 and not metadata["target_reached"]
    for key, value in evaluations.actors[1].items():  # the best-evaluated policy, not the last
        torch.testing.assert_close(used["actor"][key], value, rtol=0, atol=0)
    assert any(not torch.equal(used["actor"][k], v) for k, v in evaluations.actors[2].items())
    assert "best-evaluated policy (score 20.9; the last scored 1.5)" in capsys.readouterr().err


def test_interrupted_write_leaves_existing_file_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "keep.hdf5"
    collect("Hopper-v5", "random", 50, 0, str(out))
    before = out.read_bytes()
    real_create = h5py.Group.create_dataset
    written = []

    def interrupt_after_first_key(group, name, *args, **kwargs):
        if written:  # the real writer has a half-written temporary file open now
            assert (tmp_path / ".keep.hdf5.tmp").exists()
            raise KeyboardInterrupt
        written.append(name)
        return real_create(group, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", interrupt_after_first_key)
    with pytest.raises(KeyboardInterrupt):
        collect("Hopper-v5", "random", 50, 1, str(out))
    assert written and out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_sigterm_unwinds_the_cli_with_exit_143(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "wsrl_wm.cli", "collect", "--env",
                                "Hopper-v5", "--quality", "random", "--steps", "10000000",
                                "--out", str(tmp_path / "x.hdf5")], stderr=subprocess.PIPE,
                               text=True)
    try:
        process.stderr.readline()  # the progress bar has started: the collection is running
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        process.kill()
    assert not list(tmp_path.iterdir())


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


def test_a_saved_behaviour_policy_writes_data_again_without_training(tmp_path, monkeypatch):
    evaluations = ScriptedEvaluations([10.0, 20.0, 30.0])
    monkeypatch.setattr(collect_module, "evaluate", evaluations)
    policy = tmp_path / "medium.pt"
    collect("Hopper-v5", "medium", 50, 0, str(tmp_path / "a.hdf5"), SCRIPTED_BUDGET,
            save_policy_to=str(policy))
    saved = torch.load(policy, weights_only=True)
    assert saved["env"] == "Hopper-v5" and saved["score"] == 20.0
    for key, value in evaluations.actors[1].items():  # the policy that reached the target
        assert torch.equal(saved["state_dict"][key], value)

    def no_training(*args, **kwargs):
        raise AssertionError("a saved policy must not be trained again")

    monkeypatch.setattr(collect_module, "BehaviourTrainer", no_training)
    metadata = collect("Hopper-v5", "medium", 300, 0, str(tmp_path / "b.hdf5"),
                       policy=str(policy))
    assert metadata["steps"] == 300 and metadata["policy_eval_score"] == 20.0
    with pytest.raises(WsrlError, match="not 'Walker2d-v5'"):
        collect("Walker2d-v5", "medium", 10, 0, str(tmp_path / "c.hdf5"), policy=str(policy))
    with pytest.raises(WsrlError, match="medium or expert data, not random"):
        collect("Hopper-v5", "random", 10, 0, str(tmp_path / "d.hdf5"), policy=str(policy))
