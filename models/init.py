"""The official WSRL initialisation of the actor and the critics (docs/configs.md).

Every kernel is a random orthogonal matrix with gain √2 and every bias is zero; with
`kernel_scale_final` the last *hidden* layer's kernel has that gain instead (1e-2 in WSRL's
locomotion, antmaze and adroit configs; kitchen leaves it unset). Output heads keep gain √2.
"PyTorch" leaves the layers as torch initialises them (uniform ±1/√fan_in, nn.Linear's rule).
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

INITS = ("official", "pytorch")
GAIN = math.sqrt(2.0)


@torch.no_grad()
def orthogonal_(weight: torch.Tensor, gain: float) -> torch.Tensor:
    """In place: every matrix of `weight` [..., rows, cols] becomes an independent random
    (semi-)orthogonal matrix times `gain`, the leading dimensions (an ensemble's members, or a
    head's blocks) drawn in one batched QR, not one call per matrix.

    Q of the QR of a Gaussian matrix, with its columns' signs fixed by R's diagonal, is
    Haar-distributed, as `torch.nn.init.orthogonal_` and flax's `orthogonal` draw it; a wide
    matrix is the transpose of a tall one, so rows are orthonormal when rows ≤ cols and columns
    when rows ≥ cols, whichever of [in, out] or [out, in] the layer stores."""
    *batch, rows, cols = weight.shape
    gaussian = torch.randn(*batch, max(rows, cols), min(rows, cols), dtype=weight.dtype,
                           device=weight.device)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.diagonal(r, dim1=-2, dim2=-1).sign().unsqueeze(-2)
    return weight.copy_(gain * (q if rows >= cols else q.transpose(-1, -2)))


@torch.no_grad()
def official_init_(linears: Sequence[nn.Module], kernel_scale_final: float | None,
                   head_blocks: int = 1) -> None:
    """`linears`: a network's linear layers in order, the last one its output head (nn.Linear
    or an ensemble layer; each layer's members are drawn in one call). `head_blocks`: the head
    (an nn.Linear, [out, in]) is that many separate heads stacked along its outputs (the
    actor's mean and log-std, two Dense layers officially), each orthogonal on its own."""
    *hidden, head = linears
    for depth, layer in enumerate(hidden, start=1):
        last = depth == len(hidden) and kernel_scale_final is not None
        orthogonal_(layer.weight, kernel_scale_final if last else GAIN)
        layer.bias.zero_()
    orthogonal_(head.weight.unflatten(0, (head_blocks, -1)) if head_blocks > 1 else head.weight,
                GAIN)  # a view: the blocks are written into the head's weight
    head.bias.zero_()


def check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
