"""The fixed subsets a trial uses: a pure function of the labels and the config, never of
the trial's seed, so every trial of a sweep sees the same images."""

from __future__ import annotations

import torch

__all__ = ["imbalance_indices", "probe_indices", "subset_indices"]


def subset_indices(n: int, limit: int | None) -> torch.Tensor:
    """A fixed random subset (seed 0, not the trial's seed: every trial sees the same one)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return order if limit is None or limit >= n else order[:limit]


def imbalance_indices(labels: torch.Tensor, classes: list[int], factor: int) -> torch.Tensor:
    """Indices that keep every `factor`-th image of `classes` and all images of the others."""
    keep = torch.ones(len(labels), dtype=torch.bool)
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        keep[idx] = False
        keep[idx[::factor]] = True
    return keep.nonzero().flatten()


def probe_indices(labels: torch.Tensor, size: int, num_classes: int) -> torch.Tensor:
    """A class-stratified probe set: the first images of each class, taken round-robin."""
    per_class = [(labels == c).nonzero().flatten().tolist() for c in range(num_classes)]
    chosen: list[int] = []
    for rank in range(max(len(p) for p in per_class)):
        for p in per_class:
            if rank < len(p):
                chosen.append(p[rank])
                if len(chosen) == size:
                    return torch.tensor(chosen)
    return torch.tensor(chosen)
