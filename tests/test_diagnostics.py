"""Q diagnostics: the right quantities, and no side effect on training's random stream."""

import torch

from wsrl_wm.agents import SAC, SACConfig
from wsrl_wm.diagnostics import q_diagnostics


def make_batch(rows: int = 64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {"observations": torch.randn(rows, 5, generator=generator),
            "actions": torch.rand(rows, 2, generator=generator) * 2 - 1,
            "rewards": torch.randn(rows, generator=generator),
            "next_observations": torch.randn(rows, 5, generator=generator),
            "terminals": torch.zeros(rows), "mc_returns": torch.randn(rows, generator=generator)}


def test_q_diagnostics_values_and_rng_isolation():
    torch.manual_seed(0)
    agent = SAC(5, 2, SACConfig(num_critics=4, critic_hidden=(16,), actor_hidden=(16,)))
    batch = make_batch()
    state = torch.get_rng_state()
    metrics = q_diagnostics(agent, batch, "probe")
    assert torch.equal(state, torch.get_rng_state())  # training's stream is untouched
    with torch.no_grad():
        mean_action = torch.tanh(agent.actor.distribution_params(batch["observations"])[0])
        q_policy = agent.critic(batch["observations"], mean_action).mean()
        q_data = agent.critic(batch["observations"], batch["actions"])
        torch.set_rng_state(state)  # the same target-subset and next-action draws
        td = (q_data - agent.td_target(batch)).pow(2).mean()
    assert metrics["probe/q_policy"] == float(q_policy)
    assert metrics["probe/q_data"] == float(q_data.mean())
    assert metrics["probe/mc_return"] == float(batch["mc_returns"].mean())
    assert abs(metrics["probe/td_error"] - float(td)) < 1e-6
