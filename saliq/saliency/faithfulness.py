"""Faithfulness, not only agreement: does a model rely on the pixels its own maps mark?

A quantized model can copy the FP model's maps while its own maps explain nothing; deletion
AUC (RISE-style) shows it.
"""

from __future__ import annotations

import torch
from torch import nn

from saliq.modes import inspection_mode

__all__ = ["deletion_auc"]


@torch.no_grad()
def deletion_auc(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    maps: torch.Tensor,
    *,
    steps: int = 10,
    baseline: float = 0.0,
) -> float:
    """Area under accuracy-vs-fraction-deleted as the most salient pixels are set to `baseline`.

    RISE-style deletion: a faithful map finds the pixels the model relies on, so accuracy drops
    fast and the area is small (lower is more faithful).
    """
    n, hw = len(x), maps[0].numel()
    # rank[i, p]: position of pixel p in image i's saliency order (0 = most salient)
    rank = maps.flatten(1).argsort(dim=1, descending=True).argsort(dim=1)
    accuracies = []
    with inspection_mode(model):
        for step in range(steps + 1):
            deleted = (rank < round(step / steps * hw)).view(n, 1, *maps.shape[1:])
            xd = torch.where(deleted, torch.as_tensor(baseline, dtype=x.dtype, device=x.device), x)
            accuracies.append((model(xd).argmax(1) == y).double().mean())
    acc = torch.stack(accuracies)
    return float(((acc[1:] + acc[:-1]) / 2).mean())
