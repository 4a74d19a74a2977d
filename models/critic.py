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
