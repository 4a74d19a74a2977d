"""The update rule (wsrl_wm/agents/schedule.py): under the official rule every optimiser steps at
every sub-step, the idle ones on zero gradients, and UTD 1 is one joint step; "trained_only"
steps the trained network's optimiser only. Checked by Adam's step counts and by Adam's
momentum-only step written out by hand."""

import pytest
import torch
from conftest import make_batch

from wsrl_wm.agents import CQL, SAC, CQLConfig, SACConfig
from wsrl_wm.errors import WsrlError

OBS, ACT = 3, 2
TINY = dict(num_critics=2, critic_hidden=(4,), actor_hidden=(4,), layer_norm=False,
            compile="off")


def adam_steps(optimizer: torch.optim.Optimizer) -> set[int]:
    return {int(optimizer.state[p]["step"]) for group in optimizer.param_groups
            for p in group["params"]}


@pytest.mark.parametrize("rule, utd, expected", [
    ("official", 4, {"critic": 5, "actor": 5, "temperature": 5}),
    ("official", 1, {"critic": 1, "actor": 1, "temperature": 1}),
    ("trained_only", 4, {"critic": 4, "actor": 1, "temperature": 1}),
    ("trained_only", 1, {"critic": 1, "actor": 1, "temperature": 1}),
])
def test_adam_steps_per_update(rule, utd, expected):
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SACConfig(**TINY, utd=utd, update_rule=rule))
    optimizers = agent.make_optimizers()
    updates = 3
    for i in range(updates):
        agent.update(make_batch(8 * utd, seed=i), optimizers)
    for name, steps in expected.items():
        assert adam_steps(optimizers[name]) == {updates * steps}, name


def test_cql_lagrange_optimiser_steps_idle_in_the_critic_sub_steps():
    torch.manual_seed(0)
    agent = CQL(OBS, ACT, CQLConfig(**TINY, utd=3, cql_n_actions=2, cql_lagrange=True))
    optimizers = agent.make_optimizers()
    for i in range(2):
        agent.update(make_batch(12, seed=i), optimizers)
    assert adam_steps(optimizers["cql_alpha"]) == {2 * 4}


def momentum_step(param, state, lr, betas=(0.9, 0.999), eps=1e-8):
    """Adam's step on a zero gradient, from the state before it, in float64: the moments decay
    and the parameter moves by the bias-corrected momentum alone."""
    beta1, beta2 = betas
    step = float(state["step"]) + 1
    exp_avg = state["exp_avg"].double() * beta1
    exp_avg_sq = state["exp_avg_sq"].double() * beta2
    denominator = exp_avg_sq.sqrt() / (1 - beta2 ** step) ** 0.5 + eps
    return param.double() - lr / (1 - beta1 ** step) * exp_avg / denominator


@pytest.mark.parametrize("rule", ["official", "trained_only"])
def test_the_actor_moves_by_its_momentum_during_a_critic_sub_step(rule):
    """After one update the actor's Adam has momentum; in the next update's first critic
    sub-step the actor takes the zero-gradient step written out above (official), or stays
    put (trained_only)."""
    torch.manual_seed(1)
    agent = SAC(OBS, ACT, SACConfig(**TINY, utd=2, update_rule=rule))
    optimizers = agent.make_optimizers()
    agent.update(make_batch(16, seed=0), optimizers)
    actor = optimizers["actor"]
    before = [(p.detach().clone(), {k: v.clone() for k, v in actor.state[p].items()})
              for p in agent.actor.parameters()]
    assert all(state["exp_avg"].abs().sum() > 0 for _, state in before)
    after_first_sub_step = []
    original_target = agent.update_target

    def record_then_update_target():
        if not after_first_sub_step:
            after_first_sub_step.extend(p.detach().clone() for p in agent.actor.parameters())
        original_target()

    agent.update_target = record_then_update_target
    agent.update(make_batch(16, seed=1), optimizers)
    for (param, state), got in zip(before, after_first_sub_step, strict=True):
        if rule == "official":
            expected = momentum_step(param, state, agent.config.actor_lr)
            torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-7)
            assert not torch.equal(got, param)
        else:
            assert torch.equal(got, param)


def test_official_utd_1_takes_every_loss_at_the_same_parameters():
    """The joint step: the actor's gradient is the one at the critic before its step, as an
    actor loss taken from the start gives it; the trained-only rule's actor sees the stepped
    critic, so its gradient differs."""
    def actor_gradient(rule: str, actor_only: bool) -> list[torch.Tensor]:
        torch.manual_seed(2)
        agent = SAC(OBS, ACT, SACConfig(**TINY, utd=1, update_rule=rule))
        optimizers = agent.make_optimizers()
        batch = make_batch(16, seed=3)
        torch.manual_seed(4)
        if actor_only:  # the same draws as the joint step: the critic's first, then the actor's
            agent.critic_loss(batch)
            agent.actor_loss(batch)[0].backward()
            return [p.grad.clone() for p in agent.actor.parameters()]
        grads = []
        step = optimizers["actor"].step
        optimizers["actor"].step = lambda: (grads.extend(p.grad.clone() for p in
                                                         agent.actor.parameters()), step())
        agent.update(batch, optimizers)
        return grads

    alone = actor_gradient("official", actor_only=True)
    for got, want in zip(actor_gradient("official", False), alone, strict=True):
        torch.testing.assert_close(got, want)
    assert any(not torch.allclose(got, want)
               for got, want in zip(actor_gradient("trained_only", False), alone, strict=True))


def test_an_unknown_update_rule_is_refused():
    with pytest.raises(WsrlError, match="update_rule must be one of official, trained_only"):
        SACConfig(update_rule="sometimes")
