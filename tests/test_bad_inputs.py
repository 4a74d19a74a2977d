"""The bad-input matrix: each mistake ends `wsrl-wm fit` with one clear line and exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import build_raw, write_d4rl_hdf5

from wsrl_wm.cli import main

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = str(ROOT / "configs/smoke/pretrain.yaml")
FINETUNE = str(ROOT / "configs/smoke/finetune.yaml")


def fails_with(capsys, args: list[str], message: str) -> None:
    """In-process for speed (one interpreter for the whole matrix); the subprocess test below
    checks that nothing but the line reaches a real terminal."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("wsrl-wm: error: ")]
    assert len(errors) == 1 and message in errors[0], errors


def hopper_raw() -> dict:
    return build_raw([(5, "terminal"), (5, "timeout")])


def data_file(tmp_path: Path, change) -> str:
    raw = hopper_raw()
    change(raw)
    return str(write_d4rl_hdf5(tmp_path / "data.hdf5", raw))


def truncated(tmp_path: Path) -> str:
    path = write_d4rl_hdf5(tmp_path / "cut.hdf5", hopper_raw())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return str(path)


def corrupt(tmp_path: Path) -> str:
    path = tmp_path / "corrupt.hdf5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return str(path)


DATASET_CASES = {
    "corrupt hdf5": (corrupt, "cannot read as hdf5"),
    "truncated hdf5": (truncated, "cannot read as hdf5"),
    "missing key": (lambda p: data_file(p, lambda r: r.pop("timeouts")), "missing key(s) timeouts"),
    "mismatched lengths": (lambda p: data_file(p, lambda r: r.update(rewards=r["rewards"][:-1])),
                           "mismatched lengths"),
    "NaN observation": (lambda p: data_file(p, lambda r: r["observations"].__setitem__(
        (3, 2), np.nan)), "observations has NaN/inf"),
    "inf reward": (lambda p: data_file(p, lambda r: r["rewards"].__setitem__(4, np.inf)),
                   "rewards has NaN/inf"),
}


@pytest.mark.parametrize("case", DATASET_CASES)
def test_bad_dataset_files(capsys, tmp_path, case):
    make, message = DATASET_CASES[case]
    fails_with(capsys, ["fit", "--config", PRETRAIN, "--model.dataset", make(tmp_path)], message)


def test_dataset_of_another_env(capsys, hopper_dataset):
    fails_with(capsys, ["fit", "--config", PRETRAIN, "--model.dataset", hopper_dataset,
                        "--model.env", "Walker2d-v5"], "does not match env 'Walker2d-v5'")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--model.env", "Nope-v5", "unknown env or dataset name 'Nope-v5'"),
    ("--model.dataset", "pong-medium-v2", "unknown env or dataset name 'pong-medium-v2'"),
    ("--model.dataset", "hopper-expert-v2", "not found (tried "),
])
def test_unknown_env_or_dataset(capsys, tmp_path, monkeypatch, option, value, message):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    fails_with(capsys, ["fit", "--config", PRETRAIN, option, value], message)


@pytest.mark.parametrize(("args", "message"), [
    (["--model.env", "Walker2d-v5"], "was pretrained on 'Hopper-v5'"),
    (["--model.rollout.ratio", "1.5"], "rollout.ratio must be in [0, 1]"),
    (["--model.rollout.ratio", "-0.2"], "rollout.ratio must be in [0, 1]"),
    (["--model.utd", "0"], "utd must be a positive integer"),
    (["--model.utd", "-2"], "utd must be a positive integer"),
    (["--model.warmup_steps", "20000"], "exceed buffer_capacity"),
    (["--model.foo", "3"], "unknown model option 'foo'"),
    (["--trainer.bogus", "1"], "unrecognised arguments"),
    (["--model.utd", "four"], "invalid model.utd"),
])
def test_bad_fine_tune_settings(capsys, pretrained, args, message):
    fails_with(capsys, ["fit", "--config", FINETUNE, "--model.pretrained", pretrained, *args],
               message)


def test_unknown_key_in_a_config_file(capsys, tmp_path, pretrained):
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  init_args:\n    warmup_stpes: 10\n")
    fails_with(capsys, ["fit", "--config", FINETUNE, "--config", str(extra),
                        "--model.pretrained", pretrained], "unknown model option 'warmup_stpes'")


def test_resuming_from_a_pretraining_checkpoint(capsys, pretrained, tmp_path):
    fails_with(capsys, ["fit", "--config", FINETUNE, "--model.pretrained", pretrained,
                        "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", pretrained],
               "no fine-tuning state to resume")


def test_a_real_terminal_sees_only_the_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "wsrl_wm.cli", "fit", "--config", PRETRAIN, "--model.dataset",
         truncated(tmp_path)], capture_output=True, text=True,
        env={**os.environ, "WANDB_MODE": "disabled"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("wsrl-wm: error: ") and "cannot read as hdf5" in lines[-1]
    assert "Traceback" not in result.stderr and len(lines) <= 2  # (+ "Seed set to 0")
