"""CQL and Cal-QL offline pretraining on top of the ensemble SAC.

CQL adds α·(logsumexp_a Q(s, a) − Q(s, a_data)) per critic, with the logsumexp estimated from
random, current-policy and next-state-policy actions (importance-weighted by default). Cal-QL
clamps the policy-action Q-values to at least the Monte-Carlo return of the data, so the
pretrained Q is calibrated and does not collapse when fine-tuning starts.
"""

import math
from dataclasses import dataclass

import torch

from models import LogScalar
from wsrl_wm.agents.batches import Batch
from wsrl_wm.agents.sac import SAC, Optimizers, SACConfig, adam, check_finite


@dataclass
class CQLConfig(SACConfig):
    """Defaults: WSRL's locomotion CQL (α = 5, 10 sampled actions, importance sampling)."""

    cql_alpha: float = 5.0
    cql_n_actions: int = 10
    cql_importance_sample: bool = True
    cql_max_target_backup: bool = False
    cql_temperature: float = 1.0
    cql_lagrange: bool = False  # auto-tune α so the CQL gap matches cql_target_action_gap
    cql_target_action_gap: float = 0.8
    calql: bool = False  # clamp policy-action Q-values to max(Q, MC return)


class CQL(SAC):
    config: CQLConfig

    def __init__(self, obs_dim: int, act_dim: int, config: CQLConfig | None = None):
        super().__init__(obs_dim, act_dim, config or CQLConfig())
        self.cql_log_alpha = LogScalar(1.0) if self.config.cql_lagrange else None

    def make_optimizers(self) -> Optimizers:
        optimizers = super().make_optimizers()
        if self.cql_log_alpha is not None:
            optimizers["cql_alpha"] = adam(self.cql_log_alpha.parameters(), self.config.critic_lr)
        return optimizers

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        if not self.config.cql_max_target_backup:
            return super().td_target(batch)
        # Max over n sampled next actions of the subset-min target Q (CQL's max-backup).
        n, next_obs = self.config.cql_n_actions, batch["next_observations"]
        next_action, _ = self.actor(repeat_rows(next_obs, n))
        target_q = self.target_critic(repeat_rows(next_obs, n), next_action,
                                      self.target_members(next_obs.device)).min(dim=0).values
        target_q = target_q.view(-1, n).max(dim=1).values
        not_done = 1.0 - batch["terminals"].float()
        return batch["rewards"] + self.config.discount * not_done * target_q

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        q_data = self.critic(batch["observations"], batch["actions"])
        td_loss, info = self.td_loss(q_data, batch)
        gap = self.cql_gap(batch, q_data)  # [num_critics]
        if self.cql_log_alpha is None:
            cql_loss = self.config.cql_alpha * gap.mean()
        else:
            alpha = self.cql_log_alpha().clamp(0.0, 1e6).detach()  # α has its own (dual) step
            cql_loss = (alpha * (gap - self.config.cql_target_action_gap)).mean()
            info["cql_alpha"] = alpha.detach()
        info.update(cql_gap=gap.detach().mean(), cql_loss=cql_loss.detach())
        return td_loss + cql_loss, info

    def cql_gap(self, batch: Batch, q_data: torch.Tensor) -> torch.Tensor:
        """Per critic: mean over the batch of logsumexp_a Q(s, a) − Q(s, a_data)."""
        c, obs = self.config, batch["observations"]
        n, batch_size, act_dim = c.cql_n_actions, obs.shape[0], batch["actions"].shape[-1]
        obs_n = repeat_rows(obs, n)
        with torch.no_grad():
            current_action, current_log_prob = self.actor(obs_n)
            next_action, next_log_prob = self.actor(repeat_rows(batch["next_observations"], n))
        random_action = torch.rand_like(current_action) * 2.0 - 1.0
        q = self.critic(torch.cat([obs_n] * 3), torch.cat([random_action, current_action,
                                                           next_action]))
        q_random, q_current, q_next = (part.view(-1, batch_size, n) for part in q.chunk(3, dim=1))
        if c.calql:
            bound = batch["mc_returns"].view(1, batch_size, 1)
            q_current, q_next = torch.maximum(q_current, bound), torch.maximum(q_next, bound)
        if c.cql_importance_sample:
            uniform_log_density = act_dim * math.log(0.5)
            candidates = [q_random - uniform_log_density,
                          q_next - next_log_prob.view(1, batch_size, n),
                          q_current - current_log_prob.view(1, batch_size, n)]
        else:
            candidates = [q_random, q_data.unsqueeze(-1), q_next, q_current]
        ood = torch.logsumexp(torch.cat(candidates, -1) / c.cql_temperature, -1)
        return (ood * c.cql_temperature - q_data).mean(dim=1)

    def update_steps(self, batch: Batch, optimizers: Optimizers) -> dict:
        info = super().update_steps(batch, optimizers)
        if self.cql_log_alpha is not None:
            # Lagrange dual: raise α while the (last critic step's) gap exceeds the target.
            gap_excess = info["cql_gap"] - self.config.cql_target_action_gap
            loss = -self.cql_log_alpha().clamp(0.0, 1e6) * gap_excess
            optimizers["cql_alpha"].zero_grad(set_to_none=True)
            loss.backward()
            check_finite(cql_alpha=loss.item())
            optimizers["cql_alpha"].step()
        return info


def repeat_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, ...] → [B·n, ...] with each row repeated n times consecutively (row-major [B, n])."""
    return x.repeat_interleave(n, dim=0)
