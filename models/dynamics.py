"""Probabilistic ensemble: E Gaussian regressors in one batched network (PETS / MBPO)."""

import torch
from torch import nn
from torch.nn import functional as F

from models.ensemble import EnsembleMLP


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Twice the Gaussian negative log-likelihood without the constant, (y − μ)²·e^{−logvar} +
    logvar, averaged over batch and output dims → one value per member [E]. `target` is
    [B, out] (shared) or [E, B, out] (one bootstrap batch per member).

    No ½: MBPO (mbpo/models/bnn.py, `_compile_losses`) and mbrl-lib (mbrl/util/math.py,
    `gaussian_nll`) drop it, and their log-variance-bound penalty (0.01) and weight decay are
    tuned against this scale (docs/world_model.md, "Loss scale")."""
    nll = (target - mean).pow(2) * torch.exp(-logvar) + logvar
    return nll.flatten(1).mean(dim=1)


class ProbabilisticEnsemble(nn.Module):
    """y ~ N(μ_e(x), exp(logvar_e(x))) for members e = 1..E; forward returns ([E, B, out]) × 2.

    The log-variance is softly squeezed between learnable bounds (init max 0.5, min −10) so it
    cannot run off to ±∞ on points far from the data; the loss pushes the bounds towards each
    other (`logvar_penalty`·(Σmax − Σmin)), as in PETS/MBPO.
    """

    def __init__(self, in_dim: int, out_dim: int, num_members: int = 7,
                 hidden: tuple[int, ...] = (200, 200, 200, 200), logvar_penalty: float = 0.01):
        super().__init__()
        self.num_members = num_members
        self.mlp = EnsembleMLP(num_members, in_dim, hidden, 2 * out_dim, activation=nn.SiLU)
        self.max_logvar = nn.Parameter(torch.full((out_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((out_dim,), -10.0))
        self.logvar_penalty = logvar_penalty

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, in] or [E, B, in]; `members` computes only those members (E becomes K)."""
        mean, raw_logvar = self.mlp(x, members).chunk(2, dim=-1)
        return mean, self.bound_logvar(raw_logvar)

    def bound_logvar(self, raw: torch.Tensor) -> torch.Tensor:
        """Smooth clamp into [min, max + softplus(min − max)] (max + 3e-5 at the initial bounds)
        that keeps gradients at the edges."""
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        return self.min_logvar + F.softplus(logvar - self.min_logvar)

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """NLL summed over members (each learns at the rate it would alone) plus the penalty on
        the log-variance bounds. x, target: shared [B, ·] or per member [E, B, ·]."""
        bounds = self.max_logvar.sum() - self.min_logvar.sum()
        return gaussian_nll(*self(x), target).sum() + self.logvar_penalty * bounds
