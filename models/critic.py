"""Q-function ensemble: N critics evaluated in one batched pass."""

import torch
from torch import nn

from models.ensemble import EnsembleMLP


class CriticEnsemble(nn.Module):
    """Q_i(s, a) for i = 1..N; returns [N, B]. LayerNorm (before ReLU) as in WSRL/REDQ setups."""

    def __init__(self, obs_dim: int, act_dim: int, num_critics: int = 10,
                 hidden: tuple[int, ...] = (256, 256), layer_norm: bool = True):
        super().__init__()
        self.num_critics = num_critics
        self.mlp = EnsembleMLP(num_critics, obs_dim + act_dim, hidden, 1, layer_norm)

    def forward(self, obs: torch.Tensor, act: torch.Tensor,
                members: torch.Tensor | None = None) -> torch.Tensor:
        """[K, B] for K `members` (all N by default): a REDQ target computes only its subset."""
        return self.mlp(torch.cat([obs, act], dim=-1), members).squeeze(-1)

    def per_row(self, obs: torch.Tensor, act: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
        """[B]: Q_{member[b]}(obs[b], act[b]), each row through its own critic only.

        Rows are grouped by critic and padded to the largest group (repeating a row whose
        result is dropped), so one batched pass computes about B rows instead of N·B. The
        actor step uses it because the gradient of min_i Q_i flows only through each row's
        minimising critic. One host sync (the largest group's size).
        """
        rows, critics = len(obs), self.num_critics
        order = torch.argsort(member, stable=True)  # rows sorted by critic
        counts = torch.bincount(member, minlength=critics)
        starts = torch.cumsum(counts, 0) - counts
        width = largest(counts)
        slot = torch.arange(width, device=obs.device)
        # Group k's j-th row, or the group's last row (any row for an empty group) as padding.
        last = (starts + counts - 1).clamp(min=0)
        grouped = order[torch.minimum(starts[:, None] + slot, last[:, None])]  # [N, width]
        q = self.mlp(torch.cat([obs, act], dim=-1)[grouped]).squeeze(-1)  # [N, width]
        sorted_member = member[order]
        rank = torch.arange(rows, device=obs.device) - starts[sorted_member]
        return torch.empty(rows, dtype=q.dtype, device=q.device).index_put(
            (order,), q[sorted_member, rank])


@torch.compiler.disable
def largest(counts: torch.Tensor) -> int:
    """The one host sync of `per_row`; compiled callers break their graph here by design (the
    group width is data-dependent) instead of warning about `Tensor.item()`."""
    return int(counts.max())
