"""World-model rollouts inside fine-tuning: r = 0 is WSRL exactly, r > 0 mixes model data."""

import pytest
import torch
from conftest import fit_module

from wsrl_wm.data import load_dataset
from wsrl_wm.errors import WsrlError
from wsrl_wm.lightning import FinetuneModule
from wsrl_wm.lightning.bundle import PretrainedBundle
from wsrl_wm.online import imagination as imagination_module
from wsrl_wm.world_model import RolloutConfig, WorldModel, branched_rollout

SHORT = dict(warmup_steps=30, online_steps=8, utd=2, batch_size=32, eval_interval=100,
             eval_episodes=1, log_interval=4, buffer_capacity=1000)
ROLLOUTS = dict(interval=4, starts=16, horizon=2)


def finetuned_parameters(checkpoint: str, root, **kwargs) -> dict:
    torch.manual_seed(0)
    module = FinetuneModule(checkpoint, **SHORT, **kwargs)
    fit_module(module, root)
    return {k: v.clone() for k, v in module.agent.state_dict().items()}


def strip_world_model(checkpoint: str, path) -> str:
    """The same pretrained agent with no world model: what plain WSRL starts from."""
    bundle = PretrainedBundle.load(checkpoint)
    bundle.world_model_config = bundle.world_model_state = None
    bundle.save(path)
    return str(path)


def test_ratio_zero_is_plain_wsrl_bit_for_bit(pretrained, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the world model must not be called when r = 0")

    monkeypatch.setattr(WorldModel, "sample", never)
    monkeypatch.setattr(WorldModel, "predict", never)
    wsrl = finetuned_parameters(strip_world_model(pretrained, tmp_path / "wsrl.ckpt"),
                                tmp_path / "a")
    zero = finetuned_parameters(pretrained, tmp_path / "b",
                                rollout=RolloutConfig(ratio=0.0, **ROLLOUTS))
    assert wsrl.keys() == zero.keys()
    for key in wsrl:
        assert torch.equal(wsrl[key], zero[key]), key
    monkeypatch.undo()
    changed = finetuned_parameters(pretrained, tmp_path / "c",
                                   rollout=RolloutConfig(ratio=0.5, **ROLLOUTS))
    assert any(not torch.equal(wsrl[k], changed[k]) for k in wsrl)  # the test can tell


def test_half_of_each_batch_comes_from_the_model_buffer(pretrained):
    module = FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(ratio=0.5, **ROLLOUTS))
    real = {k: torch.zeros((20, *v.shape[1:])) for k, v in module.buffer.storage.items()}
    imagined = {k: torch.ones((20, *v.shape[1:])) for k, v in module.buffer.storage.items()}
    module.buffer.add(real)
    module.model_buffer.add(imagined, env_step=0)
    for _ in range(3):
        batch = module.sample_batch()
        from_model = (batch["observations"] == 1).all(dim=1)
        assert int(from_model.sum()) == 16 and len(from_model) == 32
        for part in batch["observations"].chunk(SHORT["utd"]):  # each UTD slice sees both
            assert 0 < int((part == 1).all(dim=1).sum()) < len(part)


def test_rollouts_start_only_from_online_states(pretrained, hopper_dataset, tmp_path,
                                                 monkeypatch):
    starts = []

    def recording_rollout(world_model, actor, start_obs, *args, **kwargs):
        starts.append(start_obs.clone())
        return branched_rollout(world_model, actor, start_obs, *args, **kwargs)

    monkeypatch.setattr(imagination_module, "branched_rollout", recording_rollout)
    module = FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(ratio=0.5, **ROLLOUTS))
    fit_module(module, tmp_path)
    assert [len(s) for s in starts] == [16, 16]  # at the switch and `interval` steps later
    online = {row.tobytes() for row in module.buffer.storage["observations"][: len(module.buffer)]
              .numpy()}
    offline = {row.tobytes() for row in load_dataset(hopper_dataset)["observations"]}
    for row in torch.cat(starts).numpy():
        assert row.tobytes() in online and row.tobytes() not in offline
    assert len(module.model_buffer) > 0


def test_model_warmup_adds_imagined_transitions_at_the_switch(pretrained, tmp_path, monkeypatch):
    starts = []

    def recording_rollout(world_model, actor, start_obs, *args, **kwargs):
        starts.append(len(start_obs))
        return branched_rollout(world_model, actor, start_obs, *args, **kwargs)

    monkeypatch.setattr(imagination_module, "branched_rollout", recording_rollout)
    rollout = RolloutConfig(ratio=0.5, **{**ROLLOUTS, "horizon": 2}, warmup_imagined=100)
    fit_module(FinetuneModule(pretrained, **SHORT, rollout=rollout), tmp_path)
    assert starts == [16 + 50, 16]  # 100 imagined transitions need 50 two-step rollouts
    with pytest.raises(WsrlError, match="warmup_imagined > 0 needs rollout.ratio > 0"):
        FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(warmup_imagined=10))


def test_rollouts_stop_at_termination_and_at_the_uncertainty_gate(pretrained):
    module = FinetuneModule(pretrained, **SHORT, rollout=RolloutConfig(ratio=0.5, **ROLLOUTS))
    world_model, actor = module.world_model, module.agent.actor
    start = torch.zeros((8, 11))
    start[:, 0] = 1.25  # a healthy hopper height
    everything_ends = lambda next_obs: torch.ones(len(next_obs), dtype=torch.bool)  # noqa: E731
    transitions, stats = branched_rollout(world_model, actor, start, 5, everything_ends)
    assert len(transitions["rewards"]) == 8 and stats["rollout/mean_length"] == 1.0
    assert transitions["terminals"].all()
    never_ends = lambda next_obs: torch.zeros(len(next_obs), dtype=torch.bool)  # noqa: E731
    transitions, stats = branched_rollout(world_model, actor, start, 5, never_ends)
    assert len(transitions["rewards"]) == 40 and stats["rollout/mean_length"] == 5.0
    gated, stats = branched_rollout(world_model, actor, start, 5, never_ends,
                                    uncertainty_threshold=-1.0)
    assert len(gated["rewards"]) == 0 and stats["rollout/mean_length"] == 0.0


def test_horizon_schedule_is_linear_between_the_bounds():
    config = RolloutConfig(horizon=1, max_horizon=5, horizon_ramp_steps=100)
    assert [config.horizon_at(s) for s in (0, 25, 50, 100, 1000)] == [1, 2, 3, 5, 5]
    assert RolloutConfig(horizon=3).horizon_at(10**6) == 3


@pytest.mark.parametrize(("rollout", "message"), [
    (RolloutConfig(ratio=1.5), r"rollout.ratio must be in \[0, 1\]"),
    (RolloutConfig(ratio=-0.1), r"rollout.ratio must be in \[0, 1\]"),
    (RolloutConfig(ratio=0.5, horizon=0), "must be > 0"),
])
def test_bad_rollout_options_are_rejected(pretrained, rollout, message):
    with pytest.raises(WsrlError, match=message):
        FinetuneModule(pretrained, **SHORT, rollout=rollout)


def test_ratio_needs_a_world_model_in_the_checkpoint(pretrained, tmp_path):
    plain = strip_world_model(pretrained, tmp_path / "plain.ckpt")
    with pytest.raises(WsrlError, match="needs a world model"):
        FinetuneModule(plain, **SHORT, rollout=RolloutConfig(ratio=0.25))


def test_model_buffer_capacity_follows_the_current_horizon():
    config = RolloutConfig(starts=100, horizon=1, max_horizon=4, horizon_ramp_steps=300,
                           retain_rounds=3)
    assert [config.buffer_capacity(s) for s in (0, 100, 300, 10**6)] == [300, 600, 1200, 1200]
    assert RolloutConfig().retain_rounds * RolloutConfig().interval == 1000  # one MBPO epoch


def test_probe_set_never_enters_a_loss_or_a_buffer(pretrained, tmp_path):
    """Poisoning the probe with NaN changes nothing but the probe diagnostics themselves."""
    bundle = PretrainedBundle.load(pretrained)
    bundle.probe = {k: torch.full_like(v, float("nan")) for k, v in bundle.probe.items()}
    poisoned_path = tmp_path / "poisoned.ckpt"
    bundle.save(poisoned_path)
    modules = {}
    for name, path in (("clean", pretrained), ("poisoned", str(poisoned_path))):
        torch.manual_seed(0)
        modules[name] = FinetuneModule(path, **{**SHORT, "eval_interval": 4})
        fit_module(modules[name], tmp_path / name)
    clean, poisoned = modules["clean"], modules["poisoned"]
    for key, value in clean.agent.state_dict().items():
        assert torch.equal(value, poisoned.agent.state_dict()[key]), key
        assert torch.isfinite(value).all()
    for key, rows in clean.buffer.storage.items():
        assert torch.equal(rows, poisoned.buffer.storage[key]), key
    metrics = (tmp_path / "clean/csv/version_0/metrics.csv").read_text()
    assert "probe/q_policy" in metrics and "online/td_error" in metrics
