"""DoReFa weight quantization (Zhou et al. 2016) with a straight-through round.

DESIGN.md's definition, exactly: ``t = tanh(w) / (2 max|tanh(w)|) + 1/2``,
``w_q = 2 round(t (2^k - 1)) / (2^k - 1) - 1``; at most `2^k` distinct values, in [-1, 1].
``k >= 32`` means full precision.

The layers use it rescaled by the detached ``max|tanh(w)|``: DoReFa's levels span [-1, 1],
so a layer without batch norm that starts QAT from FP weights would otherwise see its output
scaled by 1/max|w|. The rescaled weights still take at most `2^k` values.

One autograd function serves both. Its values are the formula's (`_quantize_`); its gradient
is, by definition, the gradient of the formula with the round replaced by the identity
(`_straight_through`), times the detached scale for the rescaled variant. For the layers'
rescaled weights that gradient has a closed form:
with p = max|t| and upstream G, dL/dt = G everywhere plus ``-sum(G * t) / p * sign(t_m)`` at
the argmax m, and dL/dw = dL/dt * (1 - t^2): three full-size passes where autograd takes about
twenty (most of them routing the max's gradient to its one weight). At a tie for the max, the
closed form gives the max's gradient to one of the tied weights, a valid subgradient where
autograd splits it. A backward with `create_graph=True` differentiates `_straight_through`
itself, so second derivatives are exact.
"""

from __future__ import annotations

import torch

from saliq.quant.plan import FULL_PRECISION

__all__ = ["dorefa_weight", "scaled_dorefa_weight"]


def _floor(peak: torch.Tensor) -> torch.Tensor:
    return peak.clamp_min(torch.finfo(peak.dtype).tiny)  # an all-zero tensor stays finite


def _quantize_(t: torch.Tensor, peak: torch.Tensor, bits: int) -> torch.Tensor:
    """DESIGN.md's formula from t = tanh(w), in its order of operations, on one temporary."""
    levels = 2**bits - 1
    return (t / (2 * _floor(peak))).add_(0.5).mul_(levels).round_().mul_(2).div_(levels).sub_(1)


def _straight_through(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The formula with the identity for its round: what the gradient is the gradient of."""
    th = torch.tanh(w)
    peak = _floor(th.abs().max())
    levels = 2**bits - 1
    return 2 * ((th / (2 * peak) + 0.5) * levels) / levels - 1


class _DoReFa(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, bits: int, scaled: bool) -> torch.Tensor:
        t = torch.tanh(w)
        peak, argmax = t.abs().reshape(-1).max(0)
        ctx.save_for_backward(w, t, peak, argmax)
        ctx.bits, ctx.scaled = bits, scaled
        w_q = _quantize_(t, peak, bits)
        return w_q.mul_(peak) if scaled else w_q

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w, t, peak, argmax = ctx.saved_tensors
        if not ctx.scaled or torch.is_grad_enabled():  # by definition (create_graph: exact)
            return _autograd_of_straight_through(grad, w, ctx.bits, ctx.scaled), None, None
        # the argmax correction below writes through a flat view: it needs a contiguous
        # gradient (a convolution's double backward delivers a strided one)
        grad = grad.contiguous()
        floor = _floor(peak)
        scale = peak / floor  # 1, or 0 for an all-zero tensor, whose output is constant 0
        grad_peak = -torch.dot(grad.reshape(-1), t.reshape(-1)) / floor
        grad_t_m = grad.reshape(-1)[argmax] + grad_peak * torch.sign(t.reshape(-1)[argmax])
        grad_w = torch.ops.aten.tanh_backward(grad, t)
        if t.device.type != "cpu" or scale.item() != 1:  # a CPU skips the pass when it can
            grad_w.mul_(scale)
        grad_w.reshape(-1)[argmax] = torch.ops.aten.tanh_backward(
            grad_t_m, t.reshape(-1)[argmax]) * scale
        return grad_w, None, None


def _autograd_of_straight_through(grad: torch.Tensor, w: torch.Tensor, bits: int,
                                  scaled: bool) -> torch.Tensor:
    """The surrogate's gradient; the rescaled output's is it times max|tanh(w)|, a scale the
    first derivative does not flow through but which a second one sees change with w."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        source = w if create_graph and w.requires_grad else w.detach().requires_grad_()
        (grad_w,) = torch.autograd.grad(_straight_through(source, bits), source, grad,
                                        create_graph=create_graph)
        if scaled:
            grad_w = grad_w * torch.tanh(source).abs().max()
    return grad_w if create_graph else grad_w.detach()


def dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa weight quantization to `bits` bits, values in [-1, 1], straight-through round."""
    if bits >= FULL_PRECISION:
        return w
    return _DoReFa.apply(w, bits, False)


def scaled_dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """`dorefa_weight(w) * max|tanh(w)|` (the scale detached): what the quant layers use."""
    if bits >= FULL_PRECISION:
        return w
    return _DoReFa.apply(w, bits, True)
