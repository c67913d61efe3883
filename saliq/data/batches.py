"""Mini-batches by index on the data's device: uniform shuffles, or class-balanced draws."""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["batch_indices", "batches"]


def batch_indices(
    y: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    balanced: bool = False,
    num_classes: int = 10,
) -> Iterator[torch.Tensor | slice]:
    """The index of each mini-batch into (x, y): a shuffled order, a class-balanced draw, or
    consecutive slices (`shuffle=False`). See `batches`."""
    n = len(y)
    if balanced:
        counts = torch.bincount(y, minlength=num_classes).clamp_min(1).float()
        weights = (1.0 / counts)[y]
        order = torch.multinomial(weights, n, replacement=True, generator=generator)
    elif shuffle:
        order = torch.randperm(n, device=y.device, generator=generator)
    else:
        order = None
    for start in range(0, n, batch_size):
        end = start + batch_size
        yield slice(start, end) if order is None else order[start:end]


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    balanced: bool = False,
    num_classes: int = 10,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches by index on `x`'s device; `balanced` draws every class equally often.

    Balanced sampling draws len(y) indices with replacement, each with probability
    1 / (num_classes * count of its class), as torch's WeightedRandomSampler would.
    """
    for idx in batch_indices(y, batch_size, generator=generator, shuffle=shuffle,
                             balanced=balanced, num_classes=num_classes):
        yield x[idx], y[idx]
