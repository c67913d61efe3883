"""Saliency maps through Captum, their agreement (fidelity) and faithfulness, and picture grids.

A saliency map, as DESIGN.md defines it: a Captum attribution for the true label, absolute
value, max over channels, each map divided by its own max, so maps are (N, H, W) in [0, 1].
Attribution leaves the model as it found it: train/eval mode, `requires_grad` flags and hooks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from torch import nn

__all__ = [
    "FIDELITY_METRICS",
    "METHODS",
    "attribute",
    "deletion_auc",
    "fidelity",
    "save_grid",
    "spearman",
    "ssim",
    "topk_iou",
]

METHODS = ("saliency", "integrated_gradients", "smoothgrad", "gradcam", "input_x_gradient")
FIDELITY_METRICS = ("ssim", "spearman", "topk_iou")


@contextmanager
def _inspection_mode(model: nn.Module) -> Iterator[None]:
    """eval() and frozen parameters for the duration; the caller's state comes back after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _raw_attribution(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str,
                     baseline: float) -> torch.Tensor:
    if method == "saliency":
        return Saliency(model).attribute(x, target=y, abs=True)
    if method == "integrated_gradients":
        return IntegratedGradients(model).attribute(
            x, baselines=baseline, target=y, n_steps=32, internal_batch_size=len(x) * 8)
    if method == "smoothgrad":
        spread = 0.15 * float(x.detach().max() - x.detach().min())
        return NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=16, nt_samples_batch_size=16, stdevs=spread,
            target=y, abs=True)
    if method == "input_x_gradient":
        return InputXGradient(model).attribute(x, target=y)
    if method == "gradcam":
        layer = model.get_submodule(model.gradcam_layer)
        cam = LayerGradCam(model, layer).attribute(x, target=y)  # (N, 1, h, w)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
    raise ValueError(f"unknown saliency method {method!r} (use one of {', '.join(METHODS)})")


def _normalise_maps(raw: torch.Tensor) -> torch.Tensor:
    maps = raw.abs().amax(dim=1)  # (N, H, W): max over channels
    peak = maps.flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), maps)


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    method: str = "saliency",
    *,
    baseline: float = 0.0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Saliency maps (N, H, W) in [0, 1] of `model` for the labels `target`, batched on x's device.

    `baseline` is the input value that means "no signal" (Integrated Gradients' start point).
    """
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r} (use one of {', '.join(METHODS)})")
    maps = []
    with _inspection_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].detach().requires_grad_()
            yb = target[start : start + batch_size]
            with torch.enable_grad():
                raw = _raw_attribution(model, xb, yb, method, baseline)
            maps.append(_normalise_maps(raw.detach()))
    return torch.cat(maps)


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


def fidelity(maps: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Agreement of `maps` with `reference` maps: each metric a mean over images, 1 = identical."""
    return {
        "ssim": float(ssim(maps, reference).mean()),
        "spearman": float(spearman(maps, reference).mean()),
        "topk_iou": float(topk_iou(maps, reference).mean()),
    }


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
    with _inspection_mode(model):
        for step in range(steps + 1):
            deleted = (rank < round(step / steps * hw)).view(n, 1, *maps.shape[1:])
            xd = torch.where(deleted, torch.as_tensor(baseline, dtype=x.dtype, device=x.device), x)
            accuracies.append((model(xd).argmax(1) == y).double().mean())
    acc = torch.stack(accuracies)
    return float(((acc[1:] + acc[:-1]) / 2).mean())


def save_grid(
    path: str | Path,
    images: torch.Tensor,
    reference_maps: torch.Tensor,
    maps: torch.Tensor | None,
    labels: torch.Tensor,
    class_names: tuple[str, ...],
    *,
    title: str = "",
    columns: tuple[str, ...] = ("input", "FP map", "quantized map"),
    rows: int = 8,
) -> Path:
    """A PNG with one row per probe image: input | reference map | map, with labels and the
    per-image Spearman agreement; `maps=None` draws input | reference map only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(rows, len(images))
    ncols = 2 if maps is None else 3
    per_image = None if maps is None else spearman(maps[:rows], reference_maps[:rows]).tolist()
    fig, axes = plt.subplots(rows, ncols, figsize=(2.2 * ncols, 2.0 * rows + 0.6), squeeze=False)
    imgs = images[:rows].detach().float().cpu().clamp(0, 1)
    for r in range(rows):
        img = imgs[r].permute(1, 2, 0).numpy()
        panels = [(img.squeeze(-1) if img.shape[-1] == 1 else img, "gray"),
                  (reference_maps[r].float().cpu().numpy(), "inferno")]
        if maps is not None:
            panels.append((maps[r].float().cpu().numpy(), "inferno"))
        for c, (data, cmap) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(data, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=10)
        axes[r][0].set_ylabel(class_names[int(labels[r])], fontsize=9)
        if per_image is not None:
            axes[r][2].set_xlabel(f"spearman {per_image[r]:.2f}", fontsize=8)
    height = fig.get_figheight()
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.45 if title else 0.1) / height))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
