"""The world model online: devices in `imagine`, MBPO-style retention, online adaptation, the
calibrated gate, the imagination generator, H-step error, task functions and the settings that
must be refused."""

import csv
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import fit_module

from wsrl_wm.cli import main
from wsrl_wm.data import load_dataset
from wsrl_wm.envs import task_functions
from wsrl_wm.envs.task_functions import task_reward_fn
from wsrl_wm.errors import WsrlError
from wsrl_wm.lightning import FinetuneModule
from wsrl_wm.online import imagination as imagination_module
from wsrl_wm.world_model import (
    ModelBuffer,
    RolloutConfig,
    WorldModel,
    WorldModelConfig,
    branched_rollout,
    h_step_error,
    train_world_model,
    trajectory_windows,
)
from wsrl_wm.world_model import train as train_module

ROOT = Path(__file__).resolve().parents[1]
FINETUNE = str(ROOT / "configs/smoke/finetune.yaml")
SHORT = dict(warmup_steps=30, online_steps=8, utd=2, batch_size=32, eval_interval=100,
             eval_episodes=1, log_interval=4, buffer_capacity=1000)
ROLLOUTS = dict(ratio=0.5, interval=4, starts=16, horizon=2)
OBS, ACT = 11, 3


def healthy_rows(count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Hopper-shaped transitions near the healthy standing pose, each row its own episode."""
    g = torch.Generator().manual_seed(seed)
    obs = 0.01 * torch.randn(count, OBS, generator=g)
    obs[:, 0] += 1.25
    return {"observations": obs, "actions": torch.rand(count, ACT, generator=g) * 2 - 1,
            "rewards": torch.randn(count, generator=g),
            "next_observations": obs + 0.01 * torch.randn(count, OBS, generator=g),
            "terminals": torch.zeros(count)}


# ---------------------------------------------------------------------------------- devices


def tensors_devices(value) -> list[torch.device]:
    if isinstance(value, torch.Tensor):
        return [value.device]
    if isinstance(value, dict):
        return [d for v in value.values() for d in tensors_devices(v)]
    return []


def test_imagine_passes_only_tensors_on_the_models_device(pretrained, monkeypatch):
    """On the 'meta' device (so a CPU-only machine catches device mixing): every tensor that
    reaches the model-side functions must be where the model is."""
    module = FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(**ROLLOUTS))
    module.buffer.add(healthy_rows(40))
    module.to("meta")
    seen = []

    def spy(result):
        def record(*args, **kwargs):
            seen.extend(d for a in (*args, *kwargs.values()) for d in tensors_devices(a))
            return result(*args)
        return record

    monkeypatch.setattr(imagination_module, "one_step_error", spy(lambda *a: 0.0))
    monkeypatch.setattr(imagination_module, "trajectory_windows",
                        spy(lambda data, h: (data["observations"][:1, None].expand(1, h + 1, OBS),
                                             data["actions"][:1, None].expand(1, h, ACT))))
    monkeypatch.setattr(imagination_module, "h_step_error",
                        spy(lambda m, s, a: torch.zeros(a.shape[1])))
    empty = {k: torch.zeros(0, *v.shape[1:]) for k, v in module.buffer.storage.items()}
    monkeypatch.setattr(imagination_module, "branched_rollout", spy(lambda *a: (empty, {})))
    module.imagine(0)
    assert len(seen) > 10 and set(seen) == {torch.device("meta")}, set(seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_imagine_and_adaptation_run_on_cuda(pretrained):
    module = FinetuneModule(pretrained, **SHORT,
                            rollout=RolloutConfig(**ROLLOUTS, uncertainty_quantile=0.9))
    module.buffer.add(healthy_rows(60))
    module.to("cuda")
    module.imagine(0)
    module.adapt_world_model()
    module.imagine(4)
    assert len(module.model_buffer) > 0
    assert module.sample_batch()["observations"].device.type == "cuda"


# ------------------------------------------------------------------------------- retention


def test_model_buffer_is_fifo_resizable_and_knows_its_age():
    buffer = ModelBuffer(10, OBS, ACT)
    first, second = healthy_rows(6, seed=1), healthy_rows(6, seed=2)
    buffer.add(first, env_step=0)
    buffer.add(second, env_step=10)
    assert len(buffer) == 10
    assert buffer.mean_age(20) == pytest.approx((4 * 20 + 6 * 10) / 10)
    buffer.resize(6)  # keeps the newest rows: exactly the second round
    assert len(buffer) == 6 and buffer.mean_age(20) == 10
    stored = buffer.sample(200, torch.Generator().manual_seed(0))["observations"]
    assert {r.tobytes() for r in stored.numpy()} <= {r.tobytes() for r in
                                                      second["observations"].numpy()}
    restored = ModelBuffer(3, OBS, ACT)
    restored.load_state_dict(buffer.state_dict())
    assert restored.capacity == 6 and restored.mean_age(20) == 10
    assert math.isnan(ModelBuffer(4, OBS, ACT).mean_age(0))


# ------------------------------------------- one fit through everything the round logs


def logged(root: Path, name: str) -> list[tuple[int, float]]:
    """(env step, value) of every row of a fit's CSV log that has `name`."""
    with open(root / "csv/version_0/metrics.csv") as f:
        return [(int(r["env_step"]), float(r[name])) for r in csv.DictReader(f) if r[name]]


def test_an_adapted_gated_run_logs_the_model_and_buffer_metrics(pretrained, tmp_path,
                                                                monkeypatch):
    """Adaptation every 2 online steps on the online buffer only (never an offline row),
    warm-started; retention by the current horizon; the gate, buffer and accuracy metrics."""
    offline = {r.tobytes() for r in load_dataset(
        torch.load(pretrained, weights_only=False)["hyper_parameters"]["dataset"])
        ["observations"]}
    trained_on = []

    def recording_train(model, data, config, generator, progress, **rule):
        assert config.max_epochs == 2
        assert rule == dict(refit_normalizer=False, keep_start=True, max_seconds=300.0)
        trained_on.append(data["observations"].clone())
        return train_world_model(model, data, config, generator, progress, **rule)

    monkeypatch.setattr(imagination_module, "train_world_model", recording_train)
    rollout = RolloutConfig(**{**ROLLOUTS, "horizon": 1}, max_horizon=3, horizon_ramp_steps=8,
                            retain_rounds=2, uncertainty_quantile=0.95, adapt_interval=2,
                            adapt_epochs=2, adapt_keep_start=True, adapt_refit_normalizer=False)
    module = FinetuneModule(pretrained, **SHORT, rollout=rollout)
    before = {k: v.clone() for k, v in module.world_model.state_dict().items()}
    capacities = []
    resize = module.model_buffer.resize
    module.model_buffer.resize = lambda capacity: (capacities.append(capacity), resize(capacity))
    fit_module(module, tmp_path)
    assert len(trained_on) == 3  # online steps 2, 4, 6
    for rows in trained_on:
        assert not {r.tobytes() for r in rows.numpy()} & offline
    assert len(trained_on[-1]) == SHORT["warmup_steps"] + 6
    after = module.world_model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # 16 starts · H · 2 rounds, H ramping 1 → 3 over 8 steps: H = 1 at online step 0, 2 at 4
    assert capacities == [16 * 1 * 2, 16 * 2 * 2] and module.model_buffer.capacity == 64

    metrics = (tmp_path / "csv/version_0/metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("model_buffer/size", "model_buffer/mean_age", "rollout/gated_share",
                 "rollout/model_share", "model/one_step_mse", "model/h_step_mse",
                 "model/probe_mse", "model/adapt_holdout_mse_before",
                 "model/adapt_holdout_mse_after", "model/probe_mse_after_adapt"):
        assert name in metrics, name


def test_the_round_at_the_switch_is_kept_whole(pretrained, tmp_path):
    """warmup_imagined 40 adds 40 one-step rollouts to the switch's 16: all 56 transitions stay
    although one round of 16 is the buffer's nominal size; the next round is cut to 16."""
    rollout = RolloutConfig(**{**ROLLOUTS, "horizon": 1}, retain_rounds=1, warmup_imagined=40)
    module = FinetuneModule(pretrained, **SHORT, rollout=rollout)
    fit_module(module, tmp_path)
    switch, later = SHORT["warmup_steps"], SHORT["warmup_steps"] + 4
    assert logged(tmp_path, "rollout/transitions")[0] == (switch, 56)
    assert logged(tmp_path, "model_buffer/size") == [(switch, 56), (later, 16)]


def test_the_uncertainty_quantile_gates_the_rollouts_of_a_fit(pretrained, tmp_path):
    """At the holdout's 5th percentile nearly every imagined transition is too uncertain;
    without a quantile none is gated."""
    shares = {}
    for quantile in (0.05, None):
        root = tmp_path / str(quantile)
        module = FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(
            **ROLLOUTS, uncertainty_quantile=quantile))
        fit_module(module, root)
        shares[quantile] = [share for _, share in logged(root, "rollout/gated_share")]
    assert len(shares[None]) == 2 and shares[None] == [0.0, 0.0]
    assert len(shares[0.05]) == 2 and min(shares[0.05]) > 0.5


def test_the_model_stays_frozen_by_default(pretrained, tmp_path):
    module = FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(**ROLLOUTS))
    assert module.rollout.adapt_interval == 0
    before = {k: v.clone() for k, v in module.world_model.state_dict().items()}
    fit_module(module, tmp_path)
    for key, value in module.world_model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_warm_start_keeps_the_normaliser_and_never_ends_worse_on_the_holdout():
    torch.manual_seed(0)
    config = WorldModelConfig(num_members=3, num_elites=2, hidden=(16,), max_epochs=3)
    model = WorldModel(OBS, ACT, config)
    data = healthy_rows(400)
    train_world_model(model, data, generator=torch.Generator().manual_seed(0), progress=False)
    mean, std = model.input_mean.clone(), model.input_std.clone()
    shifted = healthy_rows(400, seed=5)
    shifted["next_observations"] = shifted["observations"] + 0.3  # new dynamics online
    result = train_world_model(model, shifted, config, torch.Generator().manual_seed(1),
                               progress=False, refit_normalizer=False, keep_start=True)
    assert torch.equal(model.input_mean, mean) and torch.equal(model.input_std, std)
    assert result["elite_holdout_mse"] < result["elite_holdout_mse_before"]


def adapted_twice(keep_start: bool, **overrides) -> tuple[WorldModel, dict, dict]:
    """A model fitted on one set of rows, then adapted on shifted rows; (the model, its
    weights before the adaptation, the adaptation's result)."""
    torch.manual_seed(0)
    config = WorldModelConfig(num_members=3, num_elites=2, hidden=(16,), max_epochs=3)
    model = WorldModel(OBS, ACT, config)
    train_world_model(model, healthy_rows(400), generator=torch.Generator().manual_seed(0),
                      progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shifted = healthy_rows(400, seed=5)
    shifted["next_observations"] = shifted["observations"] + 0.3
    adapt = dataclasses.replace(config, **{"max_epochs": None, **overrides})
    result = train_world_model(model, shifted, adapt, torch.Generator().manual_seed(1),
                               progress=False, keep_start=keep_start)
    return model, before, result


def test_mbpo_adaptation_runs_past_the_old_cap_until_the_holdout_stops_improving():
    """No epoch cap: training stops `patience` epochs after the last 1 % gain, at its own
    epoch count, which here exceeds the earlier rule's 5."""
    model, before, result = adapted_twice(keep_start=False)
    assert result["epochs"] > 5
    assert result["elite_holdout_mse"] < result["elite_holdout_mse_before"]
    assert not torch.equal(model.input_mean, before["input_mean"])  # the scaler is refit


def test_mbpo_adaptation_never_restores_the_starting_weights():
    """With a learning rate that only makes things worse, the earlier rule (`keep_start`)
    keeps every member's starting weights; MBPO's takes its best epoch all the same."""
    kept, before, _ = adapted_twice(keep_start=True, lr=0.5, max_epochs=2)
    weights = [k for k in before if k.startswith("ensemble.mlp")]
    assert all(torch.equal(kept.state_dict()[k], before[k]) for k in weights)
    fresh, before, _ = adapted_twice(keep_start=False, lr=0.5, max_epochs=2)
    assert all(not torch.equal(fresh.state_dict()[k], before[k]) for k in weights)


def test_the_adaptation_time_guard_stops_after_the_epoch_that_passes_it():
    torch.manual_seed(0)
    model = WorldModel(OBS, ACT, WorldModelConfig(num_members=2, num_elites=1, hidden=(8,),
                                                  max_epochs=None))
    result = train_world_model(model, healthy_rows(200), generator=torch.Generator(),
                               progress=False, max_seconds=1e-9)
    assert result["epochs"] == 1


# ----------------------------------------------------------------------- loss and decay


def test_weight_decay_reaches_the_weights_only_and_may_differ_per_layer(monkeypatch):
    groups = []

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            groups.extend(params)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(train_module.torch.optim, "Adam", RecordingAdam)
    decays = (1e-5, 2e-5, 3e-5)
    model = WorldModel(OBS, ACT, WorldModelConfig(num_members=2, num_elites=1, hidden=(8, 8),
                                                  weight_decay=decays, max_epochs=1))
    train_world_model(model, healthy_rows(50), progress=False)
    decayed = [(g["params"][0], g["weight_decay"]) for g in groups if g["weight_decay"] > 0]
    heads = [m for m in model.ensemble.mlp.net if hasattr(m, "weight")]
    assert [p is m.weight for (p, _), m in zip(decayed, heads, strict=True)] == [True] * 3
    assert [d for _, d in decayed] == list(decays)
    undecayed = next(g["params"] for g in groups if g["weight_decay"] == 0)
    names = {id(p): n for n, p in model.ensemble.named_parameters()}
    assert sorted(names[id(p)] for p in undecayed) == sorted(
        n for n in names.values() if "bias" in n or "logvar" in n)
    with pytest.raises(ValueError, match="one per linear layer"):
        WorldModel(OBS, ACT, WorldModelConfig(hidden=(8, 8), weight_decay=(1e-5,)))


# -------------------------------------------------------------------------------- the gate


def spread_model() -> WorldModel:
    """Two elites whose mean Δobs differ by ±d[k] in obs dim k, d = (100, 1, 0, ...)."""
    model = WorldModel(OBS, ACT, WorldModelConfig(num_members=2, num_elites=2, hidden=(4,)))
    with torch.no_grad():
        for param in model.ensemble.mlp.parameters():
            param.zero_()
        head = model.ensemble.mlp.net[-1].bias
        head[0, 0, 0], head[1, 0, 0] = 100.0, -100.0
        head[0, 0, 1], head[1, 0, 1] = 1.0, -1.0
    return model


def test_disagreement_is_in_units_of_each_dims_spread():
    model = spread_model()
    obs, act = torch.zeros(5, OBS), torch.zeros(5, ACT)
    torch.testing.assert_close(model.disagreement(obs, act), torch.full((5,), 101 / OBS))
    model.target_std[:2] = torch.tensor([100.0, 1.0])  # fast dim 0, slow dim 1: now equal
    torch.testing.assert_close(model.disagreement(obs, act), torch.full((5,), 2 / OBS))


def test_gate_is_calibrated_on_the_holdout():
    model = WorldModel(OBS, ACT, WorldModelConfig(num_members=3, num_elites=3, hidden=(8,)))
    with pytest.raises(ValueError, match="no disagreement calibration"):
        model.gate_threshold(0.9)
    data = healthy_rows(500)
    train_world_model(model, data, WorldModelConfig(num_members=3, num_elites=3, hidden=(8,),
                                                    max_epochs=2),
                      torch.Generator().manual_seed(0), progress=False)
    holdout = torch.randperm(500, generator=torch.Generator().manual_seed(0))[:100]
    scores = model.disagreement(data["observations"][holdout], data["actions"][holdout])
    for quantile in (0.5, 0.9):
        below = (scores <= model.gate_threshold(quantile) + 1e-6).float().mean()
        assert abs(float(below) - quantile) < 0.02
    assert model.gate_threshold(1.0) == pytest.approx(float(scores.max()), rel=1e-5)


def test_gated_share_is_reported_and_an_empty_model_buffer_means_real_batches(pretrained):
    module = FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(**ROLLOUTS))
    never = lambda next_obs: torch.zeros(len(next_obs), dtype=torch.bool)  # noqa: E731
    start = healthy_rows(8)["observations"]
    _, stats = branched_rollout(module.world_model, module.agent.actor, start, 3, never,
                                uncertainty_threshold=-1.0)
    assert stats["rollout/gated_share"] == 1.0 and stats["rollout/transitions"] == 0
    _, stats = branched_rollout(module.world_model, module.agent.actor, start, 3, never,
                                uncertainty_threshold=math.inf)
    assert stats["rollout/gated_share"] == 0.0 and stats["rollout/transitions"] == 24
    module.buffer.add(healthy_rows(20))
    batch = module.sample_batch()
    assert len(batch["rewards"]) == 32 and module.batches.share_rows == [0, 32]


# ------------------------------------------------------------------ the imagination generator


def test_real_rows_are_a_prefix_of_the_r0_draw(pretrained):
    rows = healthy_rows(50)
    rows["rewards"] = torch.arange(50.0)  # each row identified by its reward
    batches = {}
    for ratio in (0.0, 0.5):
        module = FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(
            **{**ROLLOUTS, "ratio": ratio}))
        module.buffer.add(rows)
        if ratio:
            module.model_buffer.add({**healthy_rows(10), "rewards": torch.full((10,), -1.0)}, 0)
        batches[ratio] = module.sample_batch()["rewards"]
    real = batches[0.5][batches[0.5] >= 0]
    assert len(real) == 16
    assert sorted(real.tolist()) == sorted(batches[0.0][:16].tolist())


def test_rollouts_leave_the_real_data_stream_as_in_r0(pretrained, tmp_path):
    """For the same seed, every update of an r = 0.5 run starts its real-data draw from the
    same sampler state as the r = 0 run (so it draws the same real rows)."""
    states = {}
    for ratio in (0.0, 0.5):
        torch.manual_seed(0)
        module = FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(
            **{**ROLLOUTS, "ratio": ratio}))
        states[ratio] = []
        sample = module.sample_batch

        def recording(sample=sample, module=module, ratio=ratio):
            states[ratio].append(module.sampler.get_state().clone())
            return sample()
        module.sample_batch = recording
        fit_module(module, tmp_path / str(ratio))
    assert len(states[0.0]) == SHORT["online_steps"]
    for zero, mixed in zip(states[0.0], states[0.5], strict=True):
        assert torch.equal(zero, mixed)


# ------------------------------------------------------------------------------- H-step error


def test_trajectory_windows_never_cross_an_episode_boundary():
    obs = torch.arange(7.0)[:, None].repeat(1, 2)
    next_obs = obs + 1
    next_obs[2] = 99.0  # a reset after row 2 (time limit): row 3 does not continue row 2
    terminals = torch.zeros(7)
    terminals[4] = 1.0  # row 4 ends its episode
    data = {"observations": obs, "next_observations": next_obs, "terminals": terminals,
            "actions": torch.arange(7.0)[:, None]}
    states, actions = trajectory_windows(data, 2)
    # Windows of 2 linked rows: (0, 1), (1, 2), (3, 4), (5, 6); (2, 3) crosses the reset,
    # (4, 5) the terminal.
    assert actions[:, :, 0].tolist() == [[0, 1], [1, 2], [3, 4], [5, 6]]
    assert states[:, :, 0].tolist() == [[0, 1, 2], [1, 2, 99], [3, 4, 5], [5, 6, 7]]
    assert len(trajectory_windows(data, 8)[0]) == 0


def test_h_step_error_compounds_by_hand():
    model = WorldModel(2, 1, WorldModelConfig(num_members=2, num_elites=2, hidden=(4,)))
    with torch.no_grad():
        for param in model.ensemble.mlp.parameters():
            param.zero_()
        head = model.ensemble.mlp.net[-1].bias  # elite 0 predicts Δ = 1, elite 1 Δ = 2
        head[0, 0, :2], head[1, 0, :2] = 1.0, 2.0
    states = torch.zeros(3, 4, 2)  # the real system stays put
    errors = h_step_error(model, states, torch.zeros(3, 3, 1))
    # After h steps the elites are at h and 2h: mean squared error (h² + 4h²) / 2.
    torch.testing.assert_close(errors, torch.tensor([2.5, 10.0, 22.5]))


# ----------------------------------------------------------------------------- task functions


def test_task_functions_by_family():
    for env in ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5", "hopper-medium-v2"):
        assert task_reward_fn(env) is None  # the model learns locomotion rewards
    assert task_reward_fn("PointMaze_UMaze-v3") is task_functions.maze_task


def test_rollouts_take_reward_and_termination_from_the_task_function(pretrained, monkeypatch):
    calls = []

    def fake(obs, action, next_obs):
        calls.append((obs.shape, action.shape, next_obs.shape))
        return torch.full((len(obs),), 7.0), next_obs[:, 0] > 1.25  # raw reward 7

    monkeypatch.setattr(task_functions, "FAMILY_TASKS", {"hopper": fake})
    module = FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(**ROLLOUTS))
    module.model_rollouts.reward_scale, module.model_rollouts.reward_bias = 2.0, -1.0
    module.buffer.add(healthy_rows(40))
    module.imagine(0)
    stored = module.model_buffer.rows.storage
    count = len(module.model_buffer)
    assert count > 0 and calls and calls[0][0] == (16, OBS)
    assert torch.all(stored["rewards"][:count] == 13.0)  # 7 · 2 − 1
    ended = stored["next_observations"][:count, 0] > 1.25
    assert torch.equal(stored["terminals"][:count].bool(), ended)


# ------------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize(("rollout", "message"), [
    (RolloutConfig(ratio=0.01), "rounds to 0 model rows per batch"),
    (RolloutConfig(ratio=0.5, max_horizon=3, horizon_ramp_steps=0),
     "horizon_ramp_steps must be > 0"),
    (RolloutConfig(ratio=0.5, max_horizon=0), "max_horizon must be > 0"),
    (RolloutConfig(ratio=0.5, retain_rounds=0), "retain_rounds must be > 0"),
    (RolloutConfig(ratio=0.5, uncertainty_quantile=1.5), "uncertainty_quantile must be in"),
    (RolloutConfig(ratio=0.5, adapt_interval=-1), "adapt_interval >= 0"),
])
def test_settings_that_would_fail_later_are_refused(pretrained, rollout, message):
    with pytest.raises(WsrlError, match=message):
        FinetuneModule(pretrained, **SHORT, rollout=rollout)


@pytest.mark.parametrize(("args", "message"), [
    (["--model.rollout.ratio", "0.005"], "rounds to 0 model rows per batch"),
    (["--model.rollout.ratio", "0.5", "--model.rollout.horizon_ramp_steps", "0"],
     "horizon_ramp_steps must be > 0"),
    (["--model.rollout.ratio", "0.5", "--model.rollout.max_horizon", "0"],
     "max_horizon must be > 0"),
])
def test_the_cli_refuses_them_in_one_line(capsys, pretrained, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", FINETUNE, "--model.pretrained", pretrained, *args])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("wsrl-wm: error: ")]
    assert len(errors) == 1 and message in errors[0], errors


def test_adaptation_and_the_gate_through_the_cli(pretrained, tmp_path):
    """The smoke config with an adapted, gated model through `wsrl-wm fit`."""
    result = subprocess.run(
        [sys.executable, "-m", "wsrl_wm.cli", "fit", "--config", FINETUNE,
         "--model.pretrained", pretrained, "--model.rollout.ratio", "0.5",
         "--model.rollout.adapt_interval", "10", "--model.rollout.adapt_epochs", "2",
         "--model.rollout.uncertainty_quantile", "0.95", "--trainer.enable_progress_bar",
         "false", "--trainer.default_root_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env={"WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
             "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "csv/version_0/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    adapted = [int(r["env_step"]) for r in rows if r["model/adapt_holdout_mse_after"]]
    assert adapted == [60, 70]  # online steps 10 and 20 of 30 (warmup 50)
    for row in rows:
        if row["model/adapt_holdout_mse_after"]:
            assert float(row["model/adapt_holdout_mse_after"]) <= float(
                row["model/adapt_holdout_mse_before"])
    shares = [float(r["rollout/gated_share"]) for r in rows if r["rollout/gated_share"]]
    # the gate cut some transitions (none at the switch's round is possible), never all
    assert len(shares) == 3 and max(shares) > 0 and all(0 <= s < 1 for s in shares)


def test_the_error_before_an_adaptation_is_the_model_as_it_came():
    """`elite_holdout_mse_before` is measured with the normaliser the weights were trained
    with, before MBPO's rule refits it: the same number as with the refit turned off."""
    torch.manual_seed(0)
    config = WorldModelConfig(num_members=3, num_elites=2, hidden=(16,), max_epochs=2)
    model = WorldModel(OBS, ACT, config)
    train_world_model(model, healthy_rows(400), generator=torch.Generator().manual_seed(0),
                      progress=False)
    shifted = healthy_rows(400, seed=5)
    shifted["observations"] = shifted["observations"] * 3.0 + 1.0  # a new input range
    before = {}
    for refit in (True, False):
        copy = WorldModel(OBS, ACT, config)
        copy.load_state_dict(model.state_dict())
        before[refit] = train_world_model(copy, shifted, config,
                                          torch.Generator().manual_seed(1), progress=False,
                                          refit_normalizer=refit)["elite_holdout_mse_before"]
    assert before[True] == before[False]
