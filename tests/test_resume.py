"""A fine-tune killed with SIGKILL (in the warmup, or online with model rollouts, a JSRL roll-in
drawn per episode and periodic resets) resumes with `--ckpt_path last` and ends exactly where an
uninterrupted run with the same seed ends."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import fit_module

from wsrl_wm.lightning import FinetuneModule
from wsrl_wm.world_model import RolloutConfig

# Five 500-step fits in subprocesses plus one in-process: the longest tests, so kept out of a
# plain `pytest`; `make test` (CI) runs them in its second pass.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUN = ("--model.warmup_steps", "200", "--model.online_steps", "300", "--model.eval_interval",
       "100", "--model.checkpoint_interval", "25", "--model.rollout.ratio", "0.5",
       "--model.jsrl.guide_steps", "20", "--model.jsrl.curriculum", "random",
       "--model.jsrl.learner", "pretrained", "--model.resets.interval", "70")


def fit_command(pretrained: str, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "wsrl_wm.cli", "fit", "--config",
            str(ROOT / "configs/smoke/finetune.yaml"), "--model.pretrained", pretrained,
            *RUN, "--trainer.default_root_dir", str(root), *extra]


ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def checkpointed_step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=False)["online_state"]["env_step"]
    except Exception:  # not written yet
        return -1


def kill_after_checkpoint(pretrained: str, root: Path, at_least: int) -> None:
    """Start the run, SIGKILL it once a checkpoint at env step >= `at_least` exists."""
    process = subprocess.Popen(fit_command(pretrained, root), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = root / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while checkpointed_step(last) < at_least and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(pretrained, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(fit_command(pretrained, root), env=ENV, check=True, capture_output=True)
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)


def assert_same_state(resumed: dict, reference: dict) -> None:
    a, b = resumed["online_state"], reference["online_state"]
    assert a["env_step"] == b["env_step"] == 500
    for buffer in ("buffer", "model_buffer"):
        assert a[buffer]["size"] == b[buffer]["size"] and a[buffer]["size"] > 0
        for key, rows in a[buffer]["storage"].items():
            assert torch.equal(rows, b[buffer]["storage"][key]), (buffer, key)
    assert a["evaluations"] == b["evaluations"]
    for key, value in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    for mine, theirs in zip(resumed["optimizer_states"], reference["optimizer_states"],
                            strict=True):
        for pid, moments in theirs["state"].items():
            for name, value in moments.items():
                assert torch.equal(mine["state"][pid][name], value), (pid, name)


@pytest.mark.parametrize("kill_at", [50, 260], ids=["in-warmup", "online"])
def test_killed_run_resumes_exactly(pretrained, reference, tmp_path, kill_at):
    kill_after_checkpoint(pretrained, tmp_path, kill_at)
    resumed = subprocess.run(fit_command(pretrained, tmp_path, "--ckpt_path", "last"), env=ENV,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_state(torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False),
                      reference)
    rows = (tmp_path / "evaluations.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["200", "300", "400", "500"]


def test_same_config_and_seed_give_the_same_curves(pretrained, tmp_path):
    runs = []
    for name in ("first", "second"):
        torch.manual_seed(0)
        module = FinetuneModule(pretrained, warmup_steps=30, online_steps=20, utd=2,
                                batch_size=32, eval_interval=10, eval_episodes=1,
                                rollout=RolloutConfig(ratio=0.5, interval=5, starts=16))
        fit_module(module, tmp_path / name)
        runs.append(module)
    first, second = runs
    assert len(first.evaluations) == 3 and first.evaluations == second.evaluations
    for key, value in first.agent.state_dict().items():
        assert torch.equal(value, second.agent.state_dict()[key]), key
