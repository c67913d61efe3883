"""Saliency-guided training (Ismail et al., NeurIPS 2021, arXiv 2111.14338).

Each step masks the least salient input features with random values and asks the model to
give the same output distribution on the masked input: the loss gains
`kl_weight * KL(f(x) || f(x_masked))`. The model learns to rely on the features its
saliency marks, which is what a quantized model's saliency maps tend to lose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["mask_least_salient", "saliency_guided_loss"]


def mask_least_salient(x: torch.Tensor, saliency: torch.Tensor, fraction: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """`x` with its `fraction` least salient features (per example) replaced by values drawn
    uniformly from x's range; `saliency` has x's shape."""
    flat = x.flatten(1)
    k = round(fraction * flat.shape[1])
    if k == 0:
        return x.clone()
    low = saliency.flatten(1).topk(k, dim=1, largest=False).indices  # (N, k)
    lo, hi = flat.min(), flat.max()
    noise = torch.rand(low.shape, device=x.device, generator=generator, dtype=x.dtype)
    return flat.clone().scatter_(1, low, lo + (hi - lo) * noise).view_as(x)


def saliency_guided_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    fraction: float,
    kl_weight: float,
    class_weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) for one saliency-guided step: cross-entropy + kl_weight * KL."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    # Saliency of the true class, as DESIGN.md defines it (|d logit_y / d x|), from this forward.
    (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x, retain_graph=True)
    masked = mask_least_salient(x.detach(), grad.abs(), fraction, generator)
    log_p = F.log_softmax(logits, dim=1)
    log_q = F.log_softmax(model(masked), dim=1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")  # KL(p || q)
    return F.cross_entropy(logits, y, weight=class_weights) + kl_weight * kl, logits
