"""How far two sets of saliency maps agree: per image, and as fidelity (means over images).

Each metric is exactly 1.0 for identical maps: SSIM (Gaussian window, sigma 1.5, data range
1, as scikit-image computes it), Spearman rank correlation of the flattened maps (ties
averaged, as SciPy), and the IoU of the top 10 % most salient pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from saliq.saliency import FIDELITY_METRICS

__all__ = ["fidelity", "per_image", "spearman", "ssim", "topk_iou"]


def _gaussian_window(sigma: float, device, dtype) -> torch.Tensor:
    radius = int(3.5 * sigma + 0.5)  # scipy's truncate=3.5, as scikit-image uses
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.view(1, 1, -1, 1) * g.view(1, 1, 1, -1)


def ssim(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5, data_range: float = 1.0
         ) -> torch.Tensor:
    """Per-image structural similarity (N,), Gaussian window, as scikit-image computes it
    with `gaussian_weights=True, use_sample_covariance=False` (mean over the valid region)."""
    a = a.double().unsqueeze(1)
    b = b.double().unsqueeze(1)
    w = _gaussian_window(sigma, a.device, a.dtype)

    def blur(t):
        return F.conv2d(t, w)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1)


def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks of each row's values, ties sharing their average rank (as scipy's rankdata)."""
    s = v.sort(dim=1).values
    lo = torch.searchsorted(s, v.contiguous(), right=False)
    hi = torch.searchsorted(s, v.contiguous(), right=True)
    return (lo + hi - 1).double() / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Spearman rank correlation (N,) of the flattened maps.

    A constant map has no ranking: two constant maps agree (1.0) if equal, else 0.0.
    """
    ra = _average_ranks(a.flatten(1).double())
    rb = _average_ranks(b.flatten(1).double())
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    saa, sbb = (ra * ra).sum(dim=1), (rb * rb).sum(dim=1)
    # sqrt(s * s) == s in IEEE arithmetic: identical maps give exactly 1.0 (norm() would not)
    rho = (ra * rb).sum(dim=1) / (saa * sbb).sqrt().clamp_min(1e-300)
    both_flat = (saa == 0) & (sbb == 0)
    same = (a.flatten(1) == b.flatten(1)).all(dim=1)
    rho = torch.where(both_flat, same.double(), rho)
    return rho.clamp(-1.0, 1.0)


def topk_iou(a: torch.Tensor, b: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Per-image intersection over union (N,) of the top `fraction` most salient pixels."""
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    k = max(1, math.ceil(fraction * flat_a.shape[1]))
    mask_a = torch.zeros_like(flat_a, dtype=torch.bool).scatter_(1, flat_a.topk(k, 1).indices, True)
    mask_b = torch.zeros_like(flat_b, dtype=torch.bool).scatter_(1, flat_b.topk(k, 1).indices, True)
    inter = (mask_a & mask_b).sum(1).double()
    union = (mask_a | mask_b).sum(1).double()
    return inter / union


def per_image(maps: torch.Tensor, reference: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each fidelity metric per image (N,), float64: what means and intervals are made of."""
    metrics = {"ssim": ssim, "spearman": spearman, "topk_iou": topk_iou}
    return {name: metrics[name](maps, reference).double() for name in FIDELITY_METRICS}


def fidelity(maps: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Agreement of `maps` with `reference` maps: each metric a mean over images, 1 = identical."""
    return {name: float(values.mean()) for name, values in per_image(maps, reference).items()}
