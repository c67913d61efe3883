"""Fidelity-preserving QAT: explanation distillation from the frozen FP model (after e2KD,
Parchami-Araghi et al., ECCV 2024, arXiv 2402.03119).

The loss of a step is ``CE + kd_weight * tau^2 * KL(p_FP || p_Q)
+ saliency_weight * L(S_Q, S_FP)``, S the normalised saliency map (as evaluation normalises
maps: abs, max over channels, each map by its max) of one class per image (the teacher's
top-1, or the label), L the cosine distance or the mean squared error of the maps. The
student's map comes from the same forward as its logits and is computed with
`create_graph=True`, so the loss trains through it: second-order gradients through PACT's
and DoReFa's straight-through estimators (both have a differentiable backward for it).

The teacher is frozen and, without input noise, its inputs are the fixed training images: its
logits and maps are computed once, in eval mode, for the whole training set. With
`input_noise` every step draws Gaussian noise (std in the normalised input's units, from the
batch order's generator), and the teacher sees the noisy batch too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from saliq.modes import inspection_mode
from saliq.saliency import GRADIENT_METHODS
from saliq.saliency.attribution import normalise_maps

__all__ = ["Distillation", "Teacher", "student_maps"]


def student_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None, method: str,
                 create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, maps) of one forward of `model` on `x`, the maps of class `target` (None: the
    model's top-1) as evaluation computes them, differentiable in the model's parameters with
    `create_graph`. `x` must require grad."""
    if method not in GRADIENT_METHODS:
        raise ValueError(f"saliency method {method!r} has no gradient path to train through "
                         f"(use {', '.join(GRADIENT_METHODS)})")
    if method == "gradcam":
        seen = {}
        layer = model.get_submodule(model.gradcam_layer)
        hook = layer.register_forward_hook(lambda _m, _i, out: seen.__setitem__("a", out))
        try:
            logits = model(x)
        finally:
            hook.remove()
        a = seen["a"]  # (N, C, h, w): the last convolutional feature map
        target = logits.argmax(1) if target is None else target
        (grad_a,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a,
                                        create_graph=create_graph)
        cam = (grad_a.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)  # Grad-CAM
        raw = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits, normalise_maps(raw)
    logits = model(x)
    target = logits.argmax(1) if target is None else target
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x,
                                  create_graph=create_graph)
    return logits, normalise_maps(grad * x if method == "input_x_gradient" else grad)


class Teacher:
    """The frozen FP model: its logits and its maps of each image's class, for whole training
    sets at once (no noise) or one noisy batch at a time."""

    def __init__(self, model: nn.Module, method: str, target: str, baseline: torch.Tensor):
        self.model, self.method, self.target, self.baseline = model, method, target, baseline
        self.logits: torch.Tensor | None = None
        self.maps: torch.Tensor | None = None

    def of(self, x: torch.Tensor, y: torch.Tensor, with_maps: bool, batch_size: int = 512
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, maps or None) of the teacher on (x, y), in eval mode, no gradient to its
        parameters: one forward and one input gradient per batch."""
        logits, maps = [], []
        with inspection_mode(self.model):
            for i in range(0, len(x), batch_size):
                xb, yb = x[i : i + batch_size], y[i : i + batch_size]
                if not with_maps:
                    with torch.no_grad():
                        logits.append(self.model(xb))
                    continue
                with torch.enable_grad():
                    target = None if self.target == "teacher_top1" else yb
                    out, m = student_maps(self.model, xb.detach().requires_grad_(), target,
                                          self.method, create_graph=False)
                logits.append(out.detach())
                maps.append(m.detach())
        return torch.cat(logits), torch.cat(maps) if with_maps else None

    def precompute(self, x: torch.Tensor, y: torch.Tensor, with_maps: bool) -> None:
        self.logits, self.maps = self.of(x, y, with_maps)


@dataclass
class Distillation:
    """One step's loss of explanation distillation (see the module's docstring)."""

    teacher: Teacher
    kd_weight: float
    temperature: float
    saliency_weight: float
    saliency_loss: str  # cosine | mse
    input_noise: float
    class_weights: torch.Tensor | None = None

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             idx: torch.Tensor | slice, generator: torch.Generator | None) -> torch.Tensor:
        maps_needed = self.saliency_weight > 0
        if self.input_noise > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + self.input_noise * noise
            t_logits, t_maps = self.teacher.of(x, y, maps_needed)
        else:
            t_logits = self.teacher.logits[idx]
            t_maps = self.teacher.maps[idx] if maps_needed else None
        if maps_needed:
            classes = t_logits.argmax(1) if self.teacher.target == "teacher_top1" else y
            logits, maps = student_maps(model, x.detach().requires_grad_(), classes,
                                        self.teacher.method)
        else:
            logits = model(x)
        loss = F.cross_entropy(logits, y, weight=self.class_weights)
        if self.kd_weight > 0:
            tau = self.temperature
            kd = F.kl_div(F.log_softmax(logits / tau, 1), F.log_softmax(t_logits / tau, 1),
                          log_target=True, reduction="batchmean")  # KL(p_FP || p_Q)
            loss = loss + self.kd_weight * tau * tau * kd
        if maps_needed:
            s, t = maps.flatten(1), t_maps.flatten(1)
            if self.saliency_loss == "cosine":
                distance = 1 - F.cosine_similarity(s, t, dim=1, eps=1e-12)
            else:
                distance = (s - t).square().mean(1)
            loss = loss + self.saliency_weight * distance.mean()
        return loss
