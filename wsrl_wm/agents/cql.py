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
from wsrl_wm.agents.batches import Batch, repeat_rows
from wsrl_wm.agents.sac import SAC, SACConfig, adam
from wsrl_wm.agents.update import Optimizers

# The critics see the 3n·B candidate rows in blocks of this many: a block's activations
# (2.6 MB per member at width 256) stay near the core's cache from one layer to the next, where
# one [K, 3n·B, 256] tensor makes every element-wise pass a trip to memory (1.05–1.1x the
# eager Cal-QL update at d3rlpy's and WSRL's shapes, in-process A/B: docs/performance.md).
CANDIDATE_BLOCK_ROWS = 2560


@dataclass
class CQLConfig(SACConfig):
    """Defaults: WSRL's locomotion CQL (α = 5, 10 sampled actions, importance sampling,
    max-target backup: experiments/configs/cql_config.py, which locomotion_cql does not
    override)."""

    cql_alpha: float = 5.0
    cql_n_actions: int = 10
    cql_importance_sample: bool = True
    cql_max_target_backup: bool = True  # official cql_config.py: cql_max_target_backup = True
    cql_temperature: float = 1.0
    cql_lagrange: bool = False  # auto-tune α so the CQL gap matches cql_target_action_gap
    cql_target_action_gap: float = 1.0  # official cql_config.py; antmaze_cql sets 0.8
    calql: bool = False  # clamp policy-action Q-values to max(Q, MC return)
    cql_critic_subset: bool = True  # CQL term on a random `target_subset` of critics (official)


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

    def backup_actions(self) -> int:
        """CQL's own switch, `cql_max_target_backup` over `cql_n_actions` next actions; SAC's
        `max_target_backup` plays no part, as in the official CQLAgent, which overrides SAC's
        `_compute_next_actions` and `_process_target_next_qs` (wsrl/agents/cql.py)."""
        return self.config.cql_n_actions if self.config.cql_max_target_backup else 1

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        q_data = self.critic(batch["observations"], batch["actions"])
        td_loss, info = self.td_loss(q_data, batch)
        members = self.cql_members(q_data.device)
        gap = self.cql_gap(batch, q_data if members is None else q_data[members], members)
        if self.cql_log_alpha is None:
            cql_loss = self.config.cql_alpha * gap.mean()
        else:
            alpha = self.cql_log_alpha().clamp(0.0, 1e6).detach()  # α has its own (dual) step
            cql_loss = (alpha * (gap - self.config.cql_target_action_gap)).mean()
            info["cql_alpha"] = alpha.detach()
        info.update(cql_gap=gap.detach().mean(), cql_loss=cql_loss.detach())
        return td_loss + cql_loss, info

    def cql_members(self, device: torch.device) -> torch.Tensor | None:
        """The critics the CQL term trains this step: a fresh random `target_subset` of them
        (the official code's `critic_subsample_size` subsets both the target and the CQL
        term: wsrl/agents/cql.py, `_get_cql_q_diff`; 2 of 10 with `--use_redq`), or all
        (None) without `cql_critic_subset`."""
        return self.target_members(device) if self.config.cql_critic_subset else None

    def cql_gap(self, batch: Batch, q_data: torch.Tensor,
                members: torch.Tensor | None = None) -> torch.Tensor:
        """Per critic of `members` (all by default; `q_data` is theirs, [K, B]): the mean
        over the batch of logsumexp_a Q(s, a) − Q(s, a_data).

        Each state's 3n candidate actions (n uniform, n from π at s, n from π at s') are laid
        out as [B, 3n], so the critics see them in one pass and the logsumexp, the
        importance weights and Cal-QL's bound are element-wise over one [K, B, 3n] tensor (the
        critics compute it in row blocks, `CANDIDATE_BLOCK_ROWS`).
        The policy samples for s and s' come from one actor pass, without gradients: the
        actor has its own loss."""
        c, obs = self.config, batch["observations"]
        n, (batch_size, act_dim) = c.cql_n_actions, batch["actions"].shape
        random_action = torch.rand(batch_size, n, act_dim, device=obs.device) * 2.0 - 1.0
        with torch.no_grad():
            states = repeat_rows(torch.cat([obs, batch["next_observations"]]), n)
            policy_action, policy_log_prob = self.actor(states)  # [2·B·n]: s rows, then s'
        policy_action = policy_action.view(2, batch_size, n, act_dim).transpose(0, 1)
        actions = torch.cat([random_action, policy_action.reshape(batch_size, 2 * n, act_dim)],
                            dim=1)
        rows = zip(repeat_rows(obs, 3 * n).split(CANDIDATE_BLOCK_ROWS),
                   actions.view(-1, act_dim).split(CANDIDATE_BLOCK_ROWS), strict=True)
        q = torch.cat([self.critic(o, a, members) for o, a in rows], dim=1)
        q = q.view(-1, batch_size, 3 * n)
        if c.calql:  # the policy actions' Q is at least the data's MC return; random ones free
            bound = batch["mc_returns"].view(batch_size, 1).expand(batch_size, 2 * n)
            q = torch.maximum(q, torch.cat([torch.full_like(bound[:, :n], -math.inf), bound],
                                           dim=1))
        if c.cql_importance_sample:
            uniform = torch.full_like(q[0, :, :n], act_dim * math.log(0.5))
            policy = policy_log_prob.view(2, batch_size, n).transpose(0, 1)
            q = q - torch.cat([uniform, policy.reshape(batch_size, 2 * n)], dim=1)
        else:  # the data action joins the samples, all weighted 1/(3n + 1) (official cql.py)
            q = torch.cat([q, q_data.unsqueeze(-1)], dim=-1)
            q = q - math.log(3 * n + 1) * c.cql_temperature
        ood = torch.logsumexp(q / c.cql_temperature, -1) * c.cql_temperature
        return (ood - q_data).mean(dim=1)

    def dual_losses(self, info: dict) -> dict[str, torch.Tensor]:
        """The Lagrange dual, with `cql_lagrange`: raise α while the (last critic step's) gap
        exceeds the target."""
        if self.cql_log_alpha is None:
            return {}
        gap_excess = info["cql_gap"] - self.config.cql_target_action_gap
        return {"cql_alpha": -self.cql_log_alpha().clamp(0.0, 1e6) * gap_excess}

