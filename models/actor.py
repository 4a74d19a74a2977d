"""Tanh-squashed Gaussian policy, the SAC/CQL actor."""

import math

import torch
from torch import nn
from torch.nn import functional as F

from models.init import check_init, official_init_


def mlp(in_features: int, hidden: tuple[int, ...], out_features: int, layer_norm: bool):
    """Linear [→ LayerNorm] → ReLU per hidden layer, then a linear head (one network)."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(in_features, size), *([nn.LayerNorm(size)] if layer_norm else []),
                   nn.ReLU(inplace=True)]  # as the critics' (models/ensemble.py)
        in_features = size
    return nn.Sequential(*layers, nn.Linear(in_features, out_features))


class TanhGaussianActor(nn.Module):
    """a = tanh(μ(s) + σ(s)·ε).

    The log-density is computed in closed form (Gaussian log-density minus the tanh Jacobian,
    written with softplus for stability) instead of through torch.distributions, which is both
    faster and exact. `state_dependent_std=False` learns one log-std vector (used for antmaze).
    `init`, `kernel_scale_final`: models/init.py (the mean and log-std heads are orthogonal
    each on its own, as the official code's two Dense heads). The std is kept in [1e-5, 10], the
    official actor's `std_min` / `std_max` (clamping the log-std there is the same map).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256),
                 layer_norm: bool = False, state_dependent_std: bool = True,
                 log_std_min: float = math.log(1e-5), log_std_max: float = math.log(10.0),
                 init: str = "official",
                 kernel_scale_final: float | None = 1e-2):
        super().__init__()
        check_init(init)
        self.state_dependent_std = state_dependent_std
        self.net = mlp(obs_dim, hidden, act_dim * (2 if state_dependent_std else 1), layer_norm)
        if init == "official":
            official_init_([m for m in self.net if isinstance(m, nn.Linear)], kernel_scale_final,
                           head_blocks=2 if state_dependent_std else 1)
        self.log_std = None if state_dependent_std else nn.Parameter(torch.zeros(act_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def distribution_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.net(obs))

    def heads(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, clamped log-std) from the output of `net`, in the parameters' dtype even
        where autocast ran `net` in bfloat16: the log-density needs the full mantissa."""
        out = out.to(self.net[-1].weight.dtype)
        if self.state_dependent_std:
            mean, log_std = out.chunk(2, dim=-1)
        else:
            mean, log_std = out, self.log_std.expand_as(out)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def forward(self, obs: torch.Tensor, deterministic: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(action in [-1, 1], log π(action | obs)); deterministic = tanh of the mean."""
        return self.squash(*self.distribution_params(obs), deterministic)

    def squash(self, mean: torch.Tensor, log_std: torch.Tensor, deterministic: bool = False,
               log_prob: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`forward` from the Gaussian's parameters: (tanh of a draw, or of the mean, and its
        log-density, or None without `log_prob`: acting needs the same draw, not its
        density)."""
        noise = torch.zeros_like(mean) if deterministic else torch.randn_like(mean)
        pre_tanh = mean + log_std.exp() * noise
        if not log_prob:
            return torch.tanh(pre_tanh), None
        gaussian_log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 - tanh(u)^2) = 2·(log 2 - u - softplus(-2u))
        log_det = (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh), gaussian_log_prob - log_det
