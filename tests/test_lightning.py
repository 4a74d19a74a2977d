"""Pretrain → fine-tune through the Lightning modules and the `wsrl-wm fit` entry point."""

import copy
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PRETRAIN_STEPS, build_config_module, fit_module
from lightning.pytorch import Callback

from wsrl_wm.agents.compilation import compile_available
from wsrl_wm.cli import main, nested_nulls
from wsrl_wm.data import load_dataset
from wsrl_wm.errors import WsrlError
from wsrl_wm.lightning import FinetuneModule, PretrainModule
from wsrl_wm.lightning.bundle import PretrainedBundle

ROOT = Path(__file__).resolve().parents[1]
WARMUP, ONLINE, UTD = 40, 6, 2


def adam_steps(optimizer) -> int:
    states = list(optimizer.state.values())
    return int(states[0]["step"]) if states else 0


class Recorder(Callback):
    """Optimiser step counts and buffer size after every env step; a snapshot at the switch."""

    def __init__(self):
        self.rows, self.at_switch = [], None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if module.env_step == module.hparams.warmup_steps:
            self.at_switch = {
                "agent": {k: v.clone() for k, v in module.agent.state_dict().items()},
                "optimizers": [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers],
                "buffer": len(module.buffer),
            }

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        steps = {name: adam_steps(opt)
                 for name, opt in zip(module.optimizer_names, trainer.optimizers, strict=True)}
        self.rows.append((module.env_step, steps, len(module.buffer)))


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, pretrained):
    module = FinetuneModule(pretrained, warmup_steps=WARMUP, online_steps=ONLINE, utd=UTD,
                            batch_size=32, eval_interval=3, eval_episodes=1, log_interval=2)
    recorder = Recorder()
    fit_module(module, tmp_path_factory.mktemp("finetune"), [recorder])
    return module, recorder


def test_warmup_collects_k_transitions_without_any_optimiser_step(finetuned):
    module, recorder = finetuned
    for env_step, steps, buffer_size in recorder.rows[:WARMUP]:
        assert steps == {"critic": PRETRAIN_STEPS, "actor": PRETRAIN_STEPS,
                         "temperature": PRETRAIN_STEPS}  # only the restored pretraining counts
        assert buffer_size == env_step
    assert recorder.at_switch["buffer"] == WARMUP


def test_utd_k_plus_one_adam_steps_per_online_env_step(finetuned):
    """The official rule: k critic sub-steps and one actor + temperature sub-step per env
    step, every optimiser stepping in each (the idle ones on zero gradients)."""
    module, recorder = finetuned
    online_rows = recorder.rows[WARMUP:]
    assert len(online_rows) == ONLINE
    for i, (env_step, steps, _) in enumerate(online_rows, start=1):
        assert env_step == WARMUP + i
        assert steps["critic"] == steps["actor"] == steps["temperature"] == (
            PRETRAIN_STEPS + (UTD + 1) * i)


def test_switch_state_equals_the_pretrained_checkpoint(finetuned, pretrained):
    _, recorder = finetuned
    ckpt = torch.load(pretrained, weights_only=False)
    pretrained_agent = {k.removeprefix("agent."): v for k, v in ckpt["state_dict"].items()
                        if k.startswith("agent.")}
    snapshot = recorder.at_switch["agent"]
    assert snapshot.keys() <= pretrained_agent.keys()
    assert "temperature.log_value" in snapshot
    for key, value in snapshot.items():
        torch.testing.assert_close(value, pretrained_agent[key], rtol=0, atol=0)
    by_name = PretrainedBundle.load(pretrained).optimizer_states
    for name, state in zip(("critic", "actor", "temperature"), recorder.at_switch["optimizers"],
                           strict=True):
        expected = by_name[name]
        assert state["param_groups"][0]["lr"] == expected["param_groups"][0]["lr"]
        assert state["state"].keys() == expected["state"].keys()
        for pid, moments in state["state"].items():
            for key, value in moments.items():
                torch.testing.assert_close(value, expected["state"][pid][key], rtol=0, atol=0)


def test_no_offline_transition_enters_the_online_buffer(finetuned, hopper_dataset):
    module, _ = finetuned
    data = load_dataset(hopper_dataset)  # (s, a) pairs: a reset state alone may repeat across seeds
    offline = {row.tobytes() for row in np.hstack([data["observations"], data["actions"]])}
    stored = module.buffer.storage
    online = torch.cat([stored["observations"], stored["actions"]], 1)[: len(module.buffer)]
    assert len(module.buffer) == WARMUP + ONLINE
    assert not any(row.tobytes() in offline for row in online.numpy())


def test_retention_ratio_mixes_offline_rows_into_each_batch(pretrained, hopper_dataset):
    module = FinetuneModule(pretrained, warmup_steps=5, online_steps=5, batch_size=64,
                            retain_offline_ratio=0.25, offline_dataset=hopper_dataset)
    module.buffer.add({k: torch.full((10, *v.shape[1:]), 7.0)
                       for k, v in module.buffer.storage.items()})
    batch = module.sample_batch()
    from_online = (batch["observations"] == 7.0).all(dim=1)
    assert len(from_online) == 64 and int((~from_online).sum()) == 16
    offline = {row.tobytes() for row in load_dataset(hopper_dataset)["observations"]}
    assert all(row.numpy().tobytes() in offline for row in batch["observations"][~from_online])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"utd": 0}, "utd must be a positive"),
    ({"batch_size": 30, "utd": 4}, "equal slices"),
    ({"retain_offline_ratio": 1.5}, r"retain_offline_ratio must be in \[0, 1\]"),
    ({"retain_offline_ratio": 0.5}, "needs offline_dataset"),
])
def test_bad_finetune_options_are_rejected(pretrained, kwargs, message):
    with pytest.raises(WsrlError, match=message):
        FinetuneModule(pretrained, **kwargs)


def run_cli(*args, cwd):
    """`wsrl-wm ...` in a fresh interpreter importing this checkout (not an installed copy),
    with the caller's thread limit (an unlimited torch on a busy machine runs 10× slower)."""
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS",) if k in os.environ}
    return subprocess.run([sys.executable, "-m", "wsrl_wm.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600, env={
                              "WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": str(ROOT), **threads})


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # the whole pipeline through the CLI (~1.5 min); CI runs it with -m slow
def test_smoke_configs_run_pretrain_then_finetune_through_the_cli(tmp_path, hopper_dataset):
    pre = run_cli("fit", "--config", str(ROOT / "configs/smoke/pretrain.yaml"),
                  "--model.dataset", hopper_dataset, cwd=tmp_path)
    assert pre.returncode == 0, pre.stderr[-2000:]
    assert (tmp_path / "runs/smoke/pretrain/checkpoints/last.ckpt").is_file()
    fine = run_cli("fit", "--config", str(ROOT / "configs/smoke/finetune.yaml"),
                   "--model.dip_window", "30", cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr[-2000:]
    rows = read_csv(tmp_path / "runs/smoke/finetune/csv/version_0/metrics.csv")
    evals = [r for r in rows if r["eval/normalized_score"]]
    assert [int(r["env_step"]) for r in evals] == [50, 65, 80]  # the switch, then every 15
    scores = [float(r["eval/normalized_score"]) for r in evals]
    last = evals[-1]
    assert float(last["unlearning/s0"]) == pytest.approx(scores[0])
    assert float(last["unlearning/dip"]) == pytest.approx(max(0.0, scores[0] - min(scores)))
    low = scores.index(min(scores))  # the dip's low point (first reached), window 30 = all
    recovered = min(scores) >= scores[0] or any(s >= scores[0] for s in scores[low + 1:])
    assert (last.get("unlearning/recovery_step", "") == "") == (not recovered)
    assert float(last["unlearning/forgetting"]) == float(not recovered)
    losses = [float(r["train/critic_loss"]) for r in rows if r["train/critic_loss"]]
    assert losses and np.all(np.isfinite(losses))
    # ... and with imagined rollouts, compiled losses and no progress bar
    imagined = run_cli("fit", "--config", str(ROOT / "configs/smoke/finetune.yaml"),
                       "--model.rollout.ratio", "0.5",
                       "--model.compile", "on" if compile_available() else "off",
                       "--trainer.enable_progress_bar", "false",
                       "--trainer.default_root_dir", "runs/smoke/finetune_r05", cwd=tmp_path)
    assert imagined.returncode == 0, imagined.stderr[-2000:]
    assert "env_step=" not in imagined.stderr
    rows = read_csv(tmp_path / "runs/smoke/finetune_r05/csv/version_0/metrics.csv")
    rounds = [r for r in rows if r["rollout/transitions"]]
    assert [int(r["env_step"]) for r in rounds] == [50, 60, 70]  # every 10 online steps
    assert all(float(r["rollout/transitions"]) > 0 and float(r["model/one_step_mse"]) >= 0
               for r in rounds)
    # ... and the no-retention Cal-QL baseline: the CQL term and Cal-QL bound kept online
    calql = run_cli("fit", "--config", str(ROOT / "configs/smoke/finetune.yaml"),
                    "--model.online_cql_alpha", "1.0",
                    "--trainer.default_root_dir", "runs/smoke/finetune_calql", cwd=tmp_path)
    assert calql.returncode == 0, calql.stderr[-2000:]
    rows = read_csv(tmp_path / "runs/smoke/finetune_calql/csv/version_0/metrics.csv")
    gaps = [float(r["train/cql_gap"]) for r in rows if r.get("train/cql_gap")]
    assert gaps and np.all(np.isfinite(gaps))


@pytest.mark.parametrize("family", ["hopper", "halfcheetah", "walker2d", "antmaze", "kitchen",
                                    "adroit"])
@pytest.mark.parametrize("phase", ["pretrain", "finetune"])
def test_paper_configs_print_a_complete_config(capsys, family, phase):
    with pytest.raises(SystemExit) as exit_info:  # in-process: one interpreter for all configs
        main(["fit", "--config", str(ROOT / f"configs/{family}/{phase}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: wsrl_wm.lightning." in printed
    assert "max_epochs: 1" in printed
    assert ("cql_alpha" if phase == "pretrain" else "warmup_steps: 5000") in printed


def test_a_nested_null_on_the_command_line_reaches_its_field(capsys):
    """LightningCLI alone turns `--model.rollout.uncertainty_quantile null` into the string
    "None" and rejects it; the CLI passes it as a one-key mapping, keeping the group's other
    values, whichever spelling."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs/smoke/finetune.yaml"),
              "--model.rollout.uncertainty_quantile", "0.9", "--model.rollout.interval", "7",
              "--model.rollout.uncertainty_quantile", "null", "--model.resets.interval=3",
              "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "uncertainty_quantile: null" in printed and "      interval: 7" in printed
    assert "      interval: 3" in printed  # --key=value spelling left as it was
    assert nested_nulls(["--model.world_model", "null", "--a.b.c=null", "--a.b.c", "1"]) == [
        "--model.world_model", "null", "--a.b", '{"c": null}', "--a.b.c", "1"]


BUILDABLE = [f"{folder}/{phase}" for folder in ("smoke", "cpu", "hopper")
             for phase in ("pretrain", "finetune")]


@pytest.mark.parametrize("config", BUILDABLE)
@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")  # as wsrl_wm.cli does
def test_configs_build_their_modules(config, hopper_dataset, pretrained, tmp_path):
    """Beyond parsing (`--print_config` never builds anything): each config's module and
    trainer are constructed, on the test's Hopper dataset or pretrained checkpoint, with the
    config's own values in place."""
    import yaml

    path = ROOT / f"configs/{config}.yaml"
    init_args = yaml.safe_load(path.read_text())["model"]["init_args"]
    source = ("--model.dataset", hopper_dataset) if "dataset" in init_args else (
        "--model.pretrained", pretrained)
    module = build_config_module(path, source, tmp_path)
    expected = FinetuneModule if "pretrained" in init_args else PretrainModule
    assert type(module) is expected
    for key, value in init_args.items():
        if key not in ("dataset", "pretrained") and not isinstance(value, dict):
            assert module.hparams[key] == value, key
    for key, value in init_args.get("agent", {}).items():  # the yaml's agent reaches the agent
        got = getattr(module.agent.config, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key


def test_cli_override_error_is_one_line(tmp_path, pretrained):
    result = run_cli("fit", "--config", str(ROOT / "configs/smoke/finetune.yaml"),
                     "--model.pretrained", pretrained, "--model.utd", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "wsrl-wm: error: utd must be a positive integer, got 0")
    assert "Traceback" not in result.stderr


def test_missing_pretrained_checkpoint_is_one_clear_line(tmp_path):
    result = run_cli("fit", "--config", str(ROOT / "configs/smoke/finetune.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "pretrained checkpoint not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("flag", "env", "expected"), [
    ("offline", "disabled", "offline"), ("disabled", "offline", "disabled"),
    (None, "disabled", "disabled"), (None, None, "offline"), (None, "online", "online")])
def test_wandb_mode_flag_wins_over_the_environment_as_in_the_ablation(tmp_path, monkeypatch,
                                                                      flag, env, expected):
    from lightning.pytorch.loggers import WandbLogger

    from wsrl_wm.ablation.sweep import resolve_wandb_mode
    from wsrl_wm.lightning.trainer_setup import default_loggers

    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    assert resolve_wandb_mode(flag) == expected
    wandb = [lg for lg in default_loggers(tmp_path, flag, "p") if isinstance(lg, WandbLogger)]
    mode = "disabled" if not wandb else "offline" if wandb[0]._offline else "online"
    assert mode == expected


@pytest.mark.parametrize("spelling", ["--wandb-mode", "--wandb_mode"])
def test_fit_takes_the_wandb_mode_in_the_studys_spelling_and_lightnings(pretrained, spelling,
                                                                       capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs/smoke/finetune.yaml"), "--model.pretrained",
              pretrained, spelling, "disabled", "--print_config"])
    assert exit_info.value.code == 0
    assert "wandb_mode: disabled" in capsys.readouterr().out
