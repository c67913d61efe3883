"""PACT (Choi et al. 2018, arXiv 1805.06085): a ReLU with a learnable clip `alpha`, `k` bits.

DESIGN.md's definition, exactly: ``y = clip(x, 0, alpha)``,
``y_q = round(y * (2^k - 1) / alpha) * alpha / (2^k - 1)``, straight-through gradients
``d y_q / d x = 1`` where ``0 <= x < alpha`` and ``d y_q / d alpha = 1`` where ``x >= alpha``.
``k >= 32`` means no quantization (a plain ReLU).

Three ways to the same values: the fused CPU kernels of `saliq.quant.fused` (float32, one
pass each way), an eager CPU path (alpha read as a number: free on the CPU) and an eager
device path (alpha stays a tensor: no host sync). A backward run with `create_graph=True`
(a loss that trains through the model's own input gradients, as explanation distillation
does) computes the same gradients through `_PactGrads`, a function of the upstream gradient
with its own backward, so second-order gradients flow through the straight-through masks on
the fused kernels too.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from saliq.quant import fused
from saliq.quant.plan import FULL_PRECISION

__all__ = ["pact"]

# The largest float32 below zero (a subnormal): `x > _BELOW_ZERO` is `x >= 0`, exactly.
_BELOW_ZERO = -torch.finfo(torch.float32).tiny * 2.0**-23


def _grads_masks(grad, x, alpha):
    """The straight-through gradients from 0/1 masks, alpha staying a tensor: no host sync."""
    above = torch.ge(x, alpha, out=torch.empty_like(grad))  # 1 where x >= alpha
    # 1 where 0 <= x < alpha; the clamp keeps it 0 (not -1) below 0 when alpha < 0
    inside = torch.ge(x, 0, out=torch.empty_like(grad)).sub_(above).clamp_min_(0)
    grad_alpha = above.mul_(grad).sum().reshape(alpha.shape)
    return inside.mul_(grad), grad_alpha


def _grads_cpu(grad, x, alpha):
    """The same gradients in two passes: hardtanh's backward keeps `grad` where
    `low < x < high`, which with float32 neighbours as bounds is `0 <= x < alpha` and
    `x >= alpha`. It needs alpha as a number, free on the CPU (a GPU would sync each step)."""
    if alpha.dtype != torch.float32 or x.dtype != torch.float32:
        return _grads_masks(grad, x, alpha)
    a = alpha.item()
    below_a = torch.nextafter(alpha, alpha.new_tensor(-torch.inf)).item()
    grad_x = torch.ops.aten.hardtanh_backward(grad, x, _BELOW_ZERO, a)
    grad_alpha = torch.ops.aten.hardtanh_backward(grad, x, below_a, torch.inf).sum()
    return grad_x, grad_alpha.reshape(alpha.shape)


def _grads(grad, x, alpha):
    """The straight-through gradients, on the fastest path that applies."""
    kernels = _fused_kernels(x, alpha)
    if kernels is not None:
        grad_x, grad_alpha = kernels[1](grad.reshape(-1), x.reshape(-1), alpha)
        return grad_x.view_as(x), grad_alpha.reshape(alpha.shape)
    return (_grads_cpu if x.device.type == "cpu" else _grads_masks)(grad, x, alpha)


class _PactGrads(torch.autograd.Function):
    """(grad_x, grad_alpha) as a function of the upstream `grad`, for a backward with
    `create_graph=True`: linear in `grad`, with 0/1 masks that are constant in x and alpha
    almost everywhere, so its own backward is the same masked map of the upstream gradient,
    through this function again: differentiable to any order, on the fused kernels too."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor):
        ctx.save_for_backward(x, alpha)
        ctx.set_materialize_grads(False)
        return _grads(grad, x, alpha)

    @staticmethod
    def backward(ctx, grad_grad_x: torch.Tensor | None, grad_grad_alpha: torch.Tensor | None):
        x, alpha = ctx.saved_tensors
        out = None
        if grad_grad_x is not None:  # d grad_x / d grad: the mask 0 <= x < alpha
            out = _PactGrads.apply(grad_grad_x, x, alpha)[0]
        if grad_grad_alpha is not None:  # d grad_alpha / d grad: the mask x >= alpha
            above = torch.where(x >= alpha, grad_grad_alpha, grad_grad_alpha.new_zeros(()))
            out = above if out is None else out + above
        return out, None, None


class _PactQuantize(torch.autograd.Function):
    # The formula's values and gradients bit for bit, in few full-size passes: the forward
    # makes one temporary and works in place on it.
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
        ctx.save_for_backward(x, alpha)
        levels = 2**bits - 1
        kernels = _fused_kernels(x, alpha)
        if kernels is not None:
            return kernels[0](x.reshape(-1), alpha, _levels(levels)).view_as(x)
        if x.device.type == "cpu":  # alpha as a number: one pass, and free on the CPU
            y = x.clamp(0.0, alpha.item())  # clip(x, 0, alpha)
        else:
            y = torch.relu(x).clamp_max_(alpha)
        # DESIGN.md's formula in its own order of operations: y_q matches it bit for bit
        return y.mul_(levels).div_(alpha).round_().mul_(alpha).div_(levels)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, alpha = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a second derivative will follow
            return *_PactGrads.apply(grad, x, alpha), None
        return *_grads(grad, x, alpha), None


def _fused_kernels(x: torch.Tensor, alpha: torch.Tensor):
    """The fused PACT kernels where they apply: float32 on the CPU, a contiguous activation
    of 2 elements or more (sizes 0 and 1 would each be a graph of their own)."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or alpha.dtype != torch.float32
            or not x.is_contiguous() or x.numel() < 2):
        return None
    return fused.pact_kernels()


@functools.cache
def _levels(levels: int) -> torch.Tensor:
    # a tensor, not a number: the compiled kernel is built once for every bit-width
    return torch.tensor(float(levels))


def pact(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """PACT activation with a learnable clip `alpha` (a 0-dim tensor) and `bits` bits."""
    if bits >= FULL_PRECISION:
        return F.relu(x)
    return _PactQuantize.apply(x, alpha, bits)
