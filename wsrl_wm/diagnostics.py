"""Q-value diagnostics on fixed data (WSRL's key figure: offline Q-values collapse without a
warmup). Read-only: no gradient, no buffer, and no draw from the training random streams."""

import torch

from wsrl_wm.agents import SAC


@torch.no_grad()
def q_diagnostics(agent: SAC, batch: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
    """Mean Q(s, π(s)) (policy mean action), mean Q(s, a_data), their MC return when known,
    and the TD error, each averaged over the critic ensemble and the batch."""
    device = batch["observations"].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        obs = batch["observations"]
        q_data = agent.critic(obs, batch["actions"])
        policy_action = agent.actor(obs, deterministic=True)[0]
        metrics = {
            "q_policy": agent.critic(obs, policy_action).mean(),
            "q_data": q_data.mean(),
            "td_error": (q_data - agent.td_target(batch)).pow(2).mean(),
        }
        if "mc_returns" in batch:
            metrics["mc_return"] = batch["mc_returns"].mean()
    return {f"{prefix}/{k}": float(v) for k, v in metrics.items()}
