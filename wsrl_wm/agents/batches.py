"""Batches as dicts of equal-length tensors."""

import torch

Batch = dict[str, torch.Tensor]


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """k equal slices of a batch (the UTD critic steps each see fresh samples)."""
    size = len(next(iter(batch.values())))
    if size % parts:
        raise ValueError(f"batch of {size} rows does not split into {parts} equal UTD slices")
    chunks = {key: value.chunk(parts) for key, value in batch.items()}
    return [{key: chunks[key][i] for key in batch} for i in range(parts)]


def repeat_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, ...] → [B·n, ...] with each row repeated n times consecutively (row-major [B, n])."""
    return x.repeat_interleave(n, dim=0)
