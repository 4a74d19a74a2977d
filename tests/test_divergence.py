"""Divergence guard: a non-finite loss or model prediction stops the run with its last good state
saved (or skips the update / drops the rollout, if configured), never trains on NaN; Q-values
beyond `q_bound` are reported."""

import re
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ACT_DIM, OBS_DIM, PRETRAIN_STEPS, TINY_AGENT, TINY_WORLD_MODEL, fit_module
from conftest import make_batch as random_batch
from lightning.pytorch import Callback

from wsrl_wm.agents import CQL, CQLConfig, SACConfig
from wsrl_wm.cli import main
from wsrl_wm.errors import DivergenceError, WsrlError
from wsrl_wm.lightning import FinetuneModule, PretrainModule
from wsrl_wm.world_model import RolloutConfig, WorldModel, WorldModelConfig, branched_rollout

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(num_critics=2, critic_hidden=(8,), actor_hidden=(8,), layer_norm=False,
             cql_n_actions=2, utd=2, cql_lagrange=True)
WARMUP, UTD = 30, 2
SHORT = dict(warmup_steps=WARMUP, online_steps=8, utd=UTD, batch_size=32, eval_interval=100,
             eval_episodes=1, log_interval=4, buffer_capacity=1000)
NAN = float("nan")


def make_batch(size: int = 8) -> dict:
    return random_batch(size, obs_dim=OBS_DIM, act_dim=ACT_DIM)


def make_agent(**overrides) -> tuple[CQL, dict]:
    torch.manual_seed(0)
    agent = CQL(OBS_DIM, ACT_DIM, CQLConfig(**{**SMALL, **overrides}))
    return agent, agent.make_optimizers()


def poison(agent: CQL, loss: str, monkeypatch) -> dict:
    """A batch (or loss) that makes `loss` NaN while the losses stepped before it stay finite."""
    batch = make_batch()
    if loss == "critic":
        batch["rewards"][0] = NAN  # a NaN reward in the data, first UTD slice
        return batch
    name = "critic" if loss == "cql_alpha" else loss  # the Lagrange loss is made of the CQL gap
    original = getattr(agent, f"{name}_loss")

    def nan_loss(*args):
        value, *rest = original(*args)
        if loss == "cql_alpha":
            return value, {**rest[0], "cql_gap": torch.tensor(NAN)}
        return value * NAN, *rest

    monkeypatch.setattr(agent, f"{name}_loss", nan_loss)
    return batch


def state(agent: CQL, optimizers: dict) -> dict:
    """Parameters, buffers and optimiser moments, copied."""
    copied = {k: v.clone() for k, v in agent.state_dict().items()}
    for name, optimizer in optimizers.items():
        for i, moments in enumerate(optimizer.state.values()):
            copied.update({f"{name}.{i}.{k}": v.clone() for k, v in moments.items()})
    return copied


def assert_equal_and_finite(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, value in after.items():
        assert torch.equal(before[key], value), key
        assert torch.isfinite(value).all(), key


MODULES = {"critic": "critic", "actor": "actor", "temperature": "temperature",  # what each steps
           "cql_alpha": "cql_log_alpha"}


@pytest.mark.parametrize("loss", list(MODULES))
def test_stop_raises_before_stepping_on_the_nonfinite_loss(loss, monkeypatch):
    """Under the trained-only rule nothing moves the poisoned loss's module before its step;
    (under the official one its idle steps in the earlier sub-steps would, legitimately)."""
    agent, optimizers = make_agent(update_rule="trained_only")
    agent.update(make_batch(), optimizers)  # optimiser moments exist
    batch = poison(agent, loss, monkeypatch)
    module = getattr(agent, MODULES[loss])
    before = {k: v.clone() for k, v in module.state_dict().items()}
    steps = [int(s["step"]) for s in optimizers[loss].state.values()]
    with pytest.raises(DivergenceError, match=f"^{loss} loss became NaN$"):
        agent.update(batch, optimizers)
    assert_equal_and_finite(before, module.state_dict())
    assert [int(s["step"]) for s in optimizers[loss].state.values()] == steps
    assert all(torch.isfinite(v).all() for v in agent.state_dict().values())


@pytest.mark.parametrize("loss", list(MODULES))
def test_skip_undoes_the_whole_update_and_training_goes_on(loss, monkeypatch):
    agent, optimizers = make_agent(on_nonfinite="skip")
    agent.update(make_batch(), optimizers)
    before = state(agent, optimizers)
    with pytest.warns(RuntimeWarning, match=f"{loss} loss became NaN: update skipped"):
        info = agent.update(poison(agent, loss, monkeypatch), optimizers)
    assert info == {"skipped_updates": 1.0}
    assert_equal_and_finite(before, state(agent, optimizers))  # earlier UTD steps undone too
    monkeypatch.undo()
    info = agent.update(make_batch(), optimizers)
    assert info["skipped_updates"] == 1.0 and torch.isfinite(info["critic_loss"])
    after = state(agent, optimizers)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())


def test_q_explosion_is_reported_once_and_training_goes_on():
    agent, optimizers = make_agent(q_bound=1e-6)
    with pytest.warns(RuntimeWarning, match=r"Q-values reached \|Q\| = .* beyond q_bound = 1e-06"):
        info = agent.update(make_batch(), optimizers)
    assert info["q_abs_max"] > 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would fail here
        agent.update(make_batch(), optimizers)


@pytest.mark.parametrize(("option", "message"), [
    (dict(on_nonfinite="ignore"), "on_nonfinite must be one of stop, skip, got 'ignore'"),
    (dict(q_bound=0.0), "q_bound must be positive, got 0.0"),
])
def test_bad_divergence_options_are_rejected(option, message):
    with pytest.raises(WsrlError, match=message):
        SACConfig(**option)
    with pytest.raises(WsrlError, match=message):
        CQLConfig(**option)


def nonfinite_model(monkeypatch, key: str) -> None:
    """The world model predicts a non-finite `key` for row 1 of every call that has one."""
    sample = WorldModel.sample

    def poisoned(self, obs, act, generator=None):
        next_obs, reward = sample(self, obs, act, generator)
        if len(obs) > 1 and key == "next_obs":
            next_obs[1, 0] = float("inf")
        elif len(obs) > 1:
            reward[1] = NAN
        return next_obs, reward

    monkeypatch.setattr(WorldModel, "sample", poisoned)


@pytest.mark.parametrize("key", ["next_obs", "reward"])
def test_nonfinite_model_prediction_stops_or_drops_the_rollout(key, monkeypatch):
    torch.manual_seed(0)
    world_model = WorldModel(OBS_DIM, ACT_DIM, WorldModelConfig(**TINY_WORLD_MODEL))
    actor = make_agent()[0].actor
    never_ends = lambda next_obs: torch.zeros(len(next_obs), dtype=torch.bool)  # noqa: E731
    nonfinite_model(monkeypatch, key)
    with pytest.raises(DivergenceError,
                       match=f"predicted a non-finite {key} in 3 of 21 imagined transitions"):
        branched_rollout(world_model, actor, torch.zeros(8, OBS_DIM), 3, never_ends)
    transitions, stats = branched_rollout(world_model, actor, torch.zeros(8, OBS_DIM), 3,
                                          never_ends, None, None, True)
    assert len(transitions["rewards"]) == 7 + 6 + 5  # row 1 of each call ends there
    assert stats["rollout/nonfinite"] == 3.0
    assert all(torch.isfinite(v).all() for v in transitions.values())


def poisoned_finetune(pretrained: str, at_update: int, **kwargs) -> tuple[FinetuneModule, dict]:
    """A fine-tuning module whose `at_update`-th online batch holds a NaN reward; returns it
    and (filled during the fit) the agent's state just before that update."""
    module = FinetuneModule(pretrained, **SHORT, **kwargs)
    sample_batch, before = module.sample_batch, {}

    def poisoned():
        batch = sample_batch()
        if module.env_step == WARMUP + at_update - 1:
            batch["rewards"][0] = NAN
            before.update({k: v.clone() for k, v in module.agent.state_dict().items()})
        return batch

    module.sample_batch = poisoned
    return module, before


def test_finetune_stops_with_the_last_good_state_saved(pretrained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the Trainer's default_root_dir
    module, before = poisoned_finetune(pretrained, at_update=4)
    message = (r"^critic loss became NaN at env step 33 \(online update 4\); the last good state "
               f"was saved to {re.escape(str(tmp_path))}/checkpoints/last-good\\.ckpt$")
    with pytest.raises(DivergenceError, match=message):
        fit_module(module, tmp_path)
    assert_equal_and_finite(before, module.agent.state_dict())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last-good.ckpt"]
    ckpt = torch.load(tmp_path / "checkpoints/last-good.ckpt", weights_only=False)
    saved = {k.removeprefix("agent."): v for k, v in ckpt["state_dict"].items()
             if k.startswith("agent.")}
    assert_equal_and_finite(before, saved)
    critic_moments = ckpt["optimizer_states"][0]["state"]
    # three good updates of UTD + 1 Adam steps each (the official rule: idle steps count)
    assert {int(m["step"]) for m in critic_moments.values()} == {PRETRAIN_STEPS + (UTD + 1) * 3}


def test_finetune_skip_drops_the_update_and_finishes(pretrained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module, _ = poisoned_finetune(pretrained, at_update=4, on_nonfinite="skip")
    with pytest.warns(RuntimeWarning, match="critic loss became NaN: update skipped"):
        trainer = fit_module(module, tmp_path)
    online = SHORT["online_steps"] - 1  # updates that were not skipped
    steps = {name: {int(m["step"]) for m in optimizer.state.values()}
             for name, optimizer in zip(module.optimizer_names, trainer.optimizers, strict=True)}
    every = {PRETRAIN_STEPS + (UTD + 1) * online}  # every Adam steps in every sub-step
    assert steps == {"critic": every, "actor": every, "temperature": every}
    assert all(torch.isfinite(v).all() for v in module.agent.state_dict().values())
    assert not (tmp_path / "checkpoints/last-good.ckpt").exists()
    assert "train/skipped_updates" in next((tmp_path / "csv").rglob("metrics.csv")).read_text()


def test_nonfinite_model_prediction_stops_finetuning(pretrained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nonfinite_model(monkeypatch, "reward")
    module = FinetuneModule(pretrained, **SHORT,
                            rollout=RolloutConfig(ratio=0.5, interval=4, starts=16, horizon=2))
    with pytest.raises(DivergenceError, match=r"^the world model predicted a non-finite reward "
                       r"in \d+ of \d+ imagined transitions at env step 30 \(model rollouts\)"):
        fit_module(module, tmp_path)
    assert (tmp_path / "checkpoints/last-good.ckpt").is_file()


class NanRewardAt(Callback):
    """Puts a NaN reward into the offline batch of one pretraining update."""

    def __init__(self, batch_idx: int):
        self.batch_idx = batch_idx

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.batch_idx:
            batch["rewards"][0] = NAN


def test_pretraining_stops_and_its_last_good_state_can_be_finetuned(hopper_dataset, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = PretrainModule("Hopper-v5", hopper_dataset, CQLConfig(**TINY_AGENT), steps=10,
                            batch_size=32, eval_interval=10, eval_episodes=1, log_interval=2)
    with pytest.raises(DivergenceError, match="^critic loss became NaN at pretraining update 3;"):
        fit_module(module, tmp_path, [NanRewardAt(batch_idx=2)])
    finetune = FinetuneModule("checkpoints/last-good.ckpt", **SHORT)
    for key, value in finetune.agent.state_dict().items():
        assert torch.equal(value, module.agent.state_dict()[key]), key
        assert torch.isfinite(value).all(), key


def test_cli_prints_one_line_and_exits_2(pretrained, tmp_path, monkeypatch, capsys):
    sample_batch = FinetuneModule.sample_batch

    def poisoned(self):
        batch = sample_batch(self)
        batch["rewards"][0] = NAN
        return batch

    monkeypatch.setattr(FinetuneModule, "sample_batch", poisoned)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs/smoke/finetune.yaml"), "--model.pretrained",
              pretrained, "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "wsrl-wm: error: critic loss became NaN at env step 50 (online update 1); the last "
        f"good state was saved to {tmp_path}/checkpoints/last-good.ckpt")
    assert "Traceback" not in err
    assert (tmp_path / "checkpoints/last-good.ckpt").is_file()
