"""A positive learnable scalar stored as its log (SAC temperature, CQL Lagrange multiplier)."""

import math

import torch
from torch import nn


class LogScalar(nn.Module):
    """exp(log_value): optimising the log keeps the value positive without clipping."""

    def __init__(self, initial_value: float = 1.0):
        super().__init__()
        self.log_value = nn.Parameter(torch.tensor(math.log(initial_value)))

    def forward(self) -> torch.Tensor:
        return self.log_value.exp()
