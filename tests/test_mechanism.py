"""The evaluations near the switch and what each one measures of the mechanism
(wsrl_wm/online/mechanism.py), through the real fine-tuning loop."""

import pytest
import torch
from conftest import fit_module

from wsrl_wm.errors import WsrlError
from wsrl_wm.lightning import FinetuneModule
from wsrl_wm.online import mechanism as mechanism_module
from wsrl_wm.world_model import RolloutConfig

SHORT = dict(warmup_steps=30, online_steps=12, utd=2, batch_size=32, eval_interval=100,
             eval_episodes=1, log_interval=4, buffer_capacity=1000, dense_eval_steps=6,
             dense_eval_interval=2)
ROLLOUTS = RolloutConfig(ratio=0.5, interval=4, starts=16, horizon=2)


def test_dense_evaluations_then_the_regular_ones(pretrained, tmp_path):
    module = FinetuneModule(pretrained, **SHORT)
    fit_module(module, tmp_path)
    online = [row["env_step"] - SHORT["warmup_steps"] for row in module.evaluations]
    assert online == [0, 2, 4, 6, 12]  # the switch, every 2 up to 6, then the end


def test_every_evaluation_measures_the_mechanism(pretrained, tmp_path):
    """Drift is 0 at the switch and, at the end, the distance between the final and the
    pretrained policy's mean actions on the probe, recomputed here from a fresh restore; the
    temperature is the agent's; Q on imagined and real rows and the model's error are there
    once the model buffer fills."""
    module = FinetuneModule(pretrained, **SHORT, rollout=ROLLOUTS)
    fit_module(module, tmp_path)
    first, last = module.evaluations[0], module.evaluations[-1]
    assert first["mechanism/policy_drift"] == 0.0
    restored = FinetuneModule(pretrained, **SHORT, rollout=ROLLOUTS)
    probe = restored.probe["observations"]
    with torch.no_grad():
        expected = (module.agent.act(probe, deterministic=True)
                    - restored.agent.act(probe, deterministic=True)).norm(dim=-1).mean()
    assert last["mechanism/policy_drift"] == pytest.approx(float(expected), rel=1e-5)
    assert last["mechanism/policy_drift"] > 0
    assert last["mechanism/temperature"] == pytest.approx(float(module.agent.temperature()))
    for name in ("q_real", "q_imagined", "model_error", "actor_grad_norm"):
        assert all(f"mechanism/{name}" in row for row in module.evaluations[1:]), name
    assert last["mechanism/actor_grad_norm"] > 0


def test_measuring_changes_nothing_the_run_does(pretrained, tmp_path, monkeypatch):
    """A run whose measurements are skipped ends with the same parameters: the mechanism
    draws from no training stream."""
    torch.manual_seed(0)  # as the CLI's seed_everything
    watched = FinetuneModule(pretrained, **SHORT, rollout=ROLLOUTS)
    fit_module(watched, tmp_path / "watched")
    monkeypatch.setattr(mechanism_module.Mechanism, "__call__", lambda self, agent, device: {})
    torch.manual_seed(0)
    unwatched = FinetuneModule(pretrained, **SHORT, rollout=ROLLOUTS)
    fit_module(unwatched, tmp_path / "unwatched")
    for key, value in watched.agent.state_dict().items():
        assert torch.equal(value, unwatched.agent.state_dict()[key]), key


def test_a_dense_interval_of_zero_is_refused(pretrained):
    with pytest.raises(WsrlError, match="dense_eval_interval > 0"):
        FinetuneModule(pretrained, **{**SHORT, "dense_eval_interval": 0})
