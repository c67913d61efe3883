"""Mini-batches by index on the data's device: uniform shuffles, or class-balanced draws."""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["batches"]


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
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]
