"""Q-function ensemble: N critics evaluated in one batched pass."""

import torch
from torch import nn

from models.ensemble import EnsembleLinear, EnsembleMLP
from models.init import check_init, official_init_


class CriticEnsemble(nn.Module):
    """Q_i(s, a) for i = 1..N; returns [N, B]. LayerNorm (before ReLU) as in WSRL/REDQ setups.
    `init`, `kernel_scale_final`: models/init.py (each layer's N members in one draw)."""

    def __init__(self, obs_dim: int, act_dim: int, num_critics: int = 10,
                 hidden: tuple[int, ...] = (256, 256), layer_norm: bool = True,
                 init: str = "official", kernel_scale_final: float | None = 1e-2):
        super().__init__()
        check_init(init)
        self.num_critics = num_critics
        self.mlp = EnsembleMLP(num_critics, obs_dim + act_dim, hidden, 1, layer_norm)
        if init == "official":
            official_init_([m for m in self.mlp.net if isinstance(m, EnsembleLinear)],
                           kernel_scale_final)

    def forward(self, obs: torch.Tensor, act: torch.Tensor,
                members: torch.Tensor | None = None) -> torch.Tensor:
        """[K, B] for K `members` (all N by default): a REDQ target computes only its subset."""
        return self.mlp(torch.cat([obs, act], dim=-1), members).squeeze(-1)

    def per_row(self, obs: torch.Tensor, act: torch.Tensor, member: torch.Tensor,
                static: bool = False) -> torch.Tensor:
        """[B]: Q_{member[b]}(obs[b], act[b]), each row through its own critic only.

        Rows are grouped by critic and each group is cut into chunks of ⌈B/N⌉ rows (the last
        chunk of a group padded by repeating a row whose result is dropped); one batched pass
        runs every chunk through its critic. That computes fewer than 2·B rows however the rows
        are spread, instead of N·B for every critic on every row. The actor step uses it because
        the gradient of min_i Q_i flows only through each row's minimising critic. It makes one
        host sync (the number of chunks), or with `static` none: it then always runs the bound,
        2N − 1 chunks (spares repeat a row and are dropped), so its shapes do not depend on the
        data.
        """
        rows, critics = len(obs), self.num_critics
        width = -(-rows // critics)
        order = torch.argsort(member, stable=True)  # rows sorted by critic
        # (bincount's output size depends on the data: no static graph could hold it)
        counts = torch.zeros(critics, dtype=member.dtype, device=member.device).index_add_(
            0, member, torch.ones_like(member))
        starts = torch.cumsum(counts, 0) - counts
        chunks = (counts + width - 1) // width  # per critic; they sum to at most 2N − 1
        chunk_end = torch.cumsum(chunks, 0)
        first_chunk = chunk_end - chunks
        total = 2 * critics - 1 if static else int(chunks.sum())
        chunk_ids = torch.arange(total, device=obs.device)
        chunk_critic = torch.searchsorted(chunk_end, chunk_ids, right=True).clamp(max=critics - 1)
        chunk_rank = chunk_ids - first_chunk[chunk_critic]
        # Chunk c's j-th row, or its group's last row as padding (any row for a spare chunk).
        position = chunk_rank[:, None] * width + torch.arange(width, device=obs.device)
        group_start, group_size = starts[chunk_critic, None], counts[chunk_critic, None]
        grouped = order[(group_start + torch.minimum(position, group_size - 1)).clamp(min=0)]
        q = self.mlp(torch.cat([obs, act], dim=-1)[grouped], chunk_critic).squeeze(-1)
        sorted_member = member[order]
        rank = torch.arange(rows, device=obs.device) - starts[sorted_member]  # within its group
        chunk = first_chunk[sorted_member] + rank // width
        return torch.empty(rows, dtype=q.dtype, device=q.device).index_put(
            (order,), q[chunk, rank % width])

