"""Saliency maps through Captum, as DESIGN.md defines them: the attribution for a target
class, absolute value, max over channels, each map divided by its own max, so maps are
(N, H, W) in [0, 1]. Attribution leaves the model as it found it: train/eval mode,
`requires_grad` flags and hooks.
"""

from __future__ import annotations

import torch
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from torch import nn

from saliq.modes import inspection_mode
from saliq.saliency import METHODS

__all__ = ["attribute", "normalise_maps"]


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


def normalise_maps(raw: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) attributions -> (N, H, W) maps: abs, max over channels, / each max."""
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
    with inspection_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].detach().requires_grad_()
            yb = target[start : start + batch_size]
            with torch.enable_grad():
                raw = _raw_attribution(model, xb, yb, method, baseline)
            maps.append(normalise_maps(raw.detach()))
    return torch.cat(maps)
