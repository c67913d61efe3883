"""PACT activations, DoReFa weights, quantized layers and precision plans.

The definitions are the ones in DESIGN.md, exactly:

- PACT (Choi et al. 2018): ``y = clip(x, 0, alpha)``,
  ``y_q = round(y * (2^k - 1) / alpha) * alpha / (2^k - 1)``, straight-through gradients
  ``d y_q / d x = 1`` where ``0 <= x < alpha`` and ``d y_q / d alpha = 1`` where ``x >= alpha``.
- DoReFa weights (Zhou et al. 2016): ``t = tanh(w) / (2 max|tanh(w)|) + 1/2``,
  ``w_q = 2 round(t (2^k - 1)) / (2^k - 1) - 1``, straight-through round.

``k >= 32`` means no quantization (PACT is then a plain ReLU). A precision plan is data: per
quantizable layer, the bits of its weights and of its output activation (the PACT that
replaces its ReLU). `prepare` swaps a model's layers according to a plan.
"""

from __future__ import annotations

import functools
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BaseModel, BeforeValidator, ConfigDict
from torch import nn

from saliq import fused

__all__ = [
    "FULL_PRECISION",
    "PACT",
    "BitsPair",
    "LayerBits",
    "PrecisionPlan",
    "QuantConv2d",
    "QuantLinear",
    "calibrate_alphas",
    "check_bits",
    "dorefa_weight",
    "pact",
    "prepare",
    "quantizable_layers",
]

FULL_PRECISION = 32
_ALLOWED_BITS = (*range(1, 9), FULL_PRECISION)


def check_bits(bits: int) -> int:
    """Accept 1..8 and 32 (full precision); anything else is a user error."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in _ALLOWED_BITS:
        raise ValueError(f"{bits!r} is not a bit-width (use 1-8 or 32)")
    return bits


# The largest float32 below zero (a subnormal): `x > _BELOW_ZERO` is `x >= 0`, exactly.
_BELOW_ZERO = -torch.finfo(torch.float32).tiny * 2.0**-23


def _pact_grads_masks(grad, x, alpha):
    """The straight-through gradients from 0/1 masks, alpha staying a tensor: no host sync."""
    above = torch.ge(x, alpha, out=torch.empty_like(grad))  # 1 where x >= alpha
    # 1 where 0 <= x < alpha; the clamp keeps it 0 (not -1) below 0 when alpha < 0
    inside = torch.ge(x, 0, out=torch.empty_like(grad)).sub_(above).clamp_min_(0)
    grad_alpha = above.mul_(grad).sum().reshape(alpha.shape)
    return inside.mul_(grad), grad_alpha


def _pact_grads_cpu(grad, x, alpha):
    """The same gradients in two passes: hardtanh's backward keeps `grad` where
    `low < x < high`, which with float32 neighbours as bounds is `0 <= x < alpha` and
    `x >= alpha`. It needs alpha as a number, free on the CPU (a GPU would sync each step)."""
    if alpha.dtype != torch.float32 or x.dtype != torch.float32:
        return _pact_grads_masks(grad, x, alpha)
    a = alpha.item()
    below_a = torch.nextafter(alpha, alpha.new_tensor(-torch.inf)).item()
    grad_x = torch.ops.aten.hardtanh_backward(grad, x, _BELOW_ZERO, a)
    grad_alpha = torch.ops.aten.hardtanh_backward(grad, x, below_a, torch.inf).sum()
    return grad_x, grad_alpha.reshape(alpha.shape)


class _PactQuantize(torch.autograd.Function):
    # The formula's values and gradients bit for bit, in few full-size passes: the forward
    # makes one temporary and works in place on it.
    # On the CPU the fused kernels of `saliq.fused` do it in one pass each, where they exist.
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
        kernels = _fused_kernels(x, alpha)
        if kernels is not None:
            grad_x, grad_alpha = kernels[1](grad.reshape(-1), x.reshape(-1), alpha)
            return grad_x.view_as(x), grad_alpha.reshape(alpha.shape), None
        grads = _pact_grads_cpu if x.device.type == "cpu" else _pact_grads_masks
        return *grads(grad, x, alpha), None


def _fused_kernels(x: torch.Tensor, alpha: torch.Tensor):
    """The fused PACT kernels where they apply: float32 on the CPU, a contiguous activation."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or alpha.dtype != torch.float32
            or not x.is_contiguous()):
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


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa weight quantization to `bits` bits, values in [-1, 1], straight-through round."""
    if bits >= FULL_PRECISION:
        return w
    t = torch.tanh(w)
    # an all-zero tensor has max 0; the floor keeps it finite and changes nothing else
    t = t / (2 * t.abs().max().clamp_min(torch.finfo(t.dtype).tiny))
    levels = 2**bits - 1
    # in place on temporaries that autograd does not keep: the formula's values, fewer tensors
    t = _RoundSTE.apply(t.add_(0.5).mul_(levels))
    return t.mul_(2).div_(levels).sub_(1)


class _ScaledDoReFa(torch.autograd.Function):
    """`dorefa_weight(w) * max|tanh(w)|` (detached scale) with its gradient in closed form.

    Autograd takes about twenty full-size passes through the chain, most of them to route the
    gradient of max|tanh(w)| to the single weight that holds it: a third of a QAT step's
    overhead on a CPU. With the straight-through round the chain collapses. For p = max|t|,
    t = tanh(w), upstream G: dL/dt = G everywhere, plus -sum(G * t) / p * sign(t_m) at the
    argmax m; dL/dw = dL/dt * (1 - t^2). Three passes. Equal to autograd's gradient up to
    rounding (tests check it to float tolerance); at a tie for the max, the whole max gradient
    goes to one of the tied weights, a valid subgradient where autograd splits it.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, bits: int) -> torch.Tensor:
        t = torch.tanh(w)
        peak, argmax = t.abs().reshape(-1).max(0)
        floor = peak.clamp_min(torch.finfo(t.dtype).tiny)  # an all-zero tensor stays finite
        levels = 2**bits - 1
        # the same operations as `dorefa_weight`, in place on one temporary: the same values
        w_q = (t / (2 * floor)).add_(0.5).mul_(levels).round_().mul_(2).div_(levels).sub_(1)
        ctx.save_for_backward(t, peak, floor, argmax)
        return w_q.mul_(peak)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        t, peak, floor, argmax = ctx.saved_tensors
        scale = peak / floor  # 1, or 0 for an all-zero tensor, whose output is constant 0
        grad_peak = -torch.dot(grad.reshape(-1), t.reshape(-1)) / floor
        grad_t_m = grad.reshape(-1)[argmax] + grad_peak * torch.sign(t.reshape(-1)[argmax])
        grad_w = torch.ops.aten.tanh_backward(grad, t)
        if t.device.type != "cpu" or scale.item() != 1:  # a CPU skips the pass when it can
            grad_w.mul_(scale)
        grad_w.reshape(-1)[argmax] = torch.ops.aten.tanh_backward(
            grad_t_m, t.reshape(-1)[argmax]) * scale
        return grad_w, None


def _scaled_dorefa(w: torch.Tensor, bits: int) -> torch.Tensor:
    # DoReFa's levels span [-1, 1]; a layer without batch norm that starts QAT from FP weights
    # would see its output scaled by 1/max|w|. Rescaling by the (detached) max|tanh(w)| keeps
    # the FP output scale and still leaves at most 2^k distinct values.
    if bits >= FULL_PRECISION:
        return w
    return _ScaledDoReFa.apply(w, bits)


class PACT(nn.Module):
    """A ReLU replacement with a learnable clipping level `alpha` and `bits` bits."""

    def __init__(self, bits: int = FULL_PRECISION, alpha_init: float = 10.0) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pact(x, self.alpha, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, alpha={self.alpha.item():.4g}"


class QuantConv2d(nn.Conv2d):
    """`nn.Conv2d` whose weights are DoReFa-quantized to `weight_bits` in the forward pass."""

    weight_bits: int = FULL_PRECISION

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, weight_bits: int) -> QuantConv2d:
        q = cls.__new__(cls)
        q.__dict__ = conv.__dict__.copy()  # shares the parameters: no copy, same names
        q.weight_bits = check_bits(weight_bits)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _scaled_dorefa(self.weight, self.weight_bits), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}"


class QuantLinear(nn.Linear):
    """`nn.Linear` whose weights are DoReFa-quantized to `weight_bits` in the forward pass."""

    weight_bits: int = FULL_PRECISION

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_bits: int) -> QuantLinear:
        q = cls.__new__(cls)
        q.__dict__ = linear.__dict__.copy()
        q.weight_bits = check_bits(weight_bits)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _scaled_dorefa(self.weight, self.weight_bits), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}"


# Before pydantic's int check, so that 4.5, True and "4" get the same message as 64 does.
Bits = Annotated[int, BeforeValidator(check_bits)]


class _Data(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class BitsPair(_Data):
    """Bits of a layer's weights and of its output activation; 32 = full precision."""

    weight_bits: Bits = FULL_PRECISION
    act_bits: Bits = FULL_PRECISION


class LayerBits(_Data):
    """An override: the fields left out inherit from the plan's default."""

    weight_bits: Bits | None = None
    act_bits: Bits | None = None


class PrecisionPlan(_Data):
    """Per-layer precision: `default`, then the `first`/`last` layer policy, then `layers`.

    >>> PrecisionPlan(default=BitsPair(weight_bits=2, act_bits=2),
    ...               first=LayerBits(weight_bits=8)).resolve(["conv1", "fc"])
    {'conv1': (8, 2), 'fc': (2, 2)}
    """

    default: BitsPair = BitsPair()
    first: LayerBits | None = None
    last: LayerBits | None = None
    layers: dict[str, LayerBits] = {}

    @classmethod
    def uniform(cls, weight_bits: int, act_bits: int | None = None) -> PrecisionPlan:
        act = weight_bits if act_bits is None else act_bits
        return cls(default=BitsPair(weight_bits=weight_bits, act_bits=act))

    def unknown_layers(self, layer_names: list[str]) -> list[str]:
        return [name for name in self.layers if name not in layer_names]

    def resolve(self, layer_names: list[str]) -> dict[str, tuple[int, int]]:
        """(weight_bits, act_bits) for every layer, in the order given (first to last)."""
        unknown = self.unknown_layers(layer_names)
        if unknown:
            raise ValueError(
                f"no layer named {', '.join(unknown)} (layers: {', '.join(layer_names)})"
            )
        resolved = {}
        for i, name in enumerate(layer_names):
            w, a = self.default.weight_bits, self.default.act_bits
            overrides = [
                self.first if i == 0 else None,
                self.last if i == len(layer_names) - 1 else None,
                self.layers.get(name),
            ]
            for o in overrides:
                if o is not None:
                    w = o.weight_bits if o.weight_bits is not None else w
                    a = o.act_bits if o.act_bits is not None else a
            resolved[name] = (w, a)
        return resolved

    def is_full_precision(self, layer_names: list[str]) -> bool:
        return all(
            w >= FULL_PRECISION and a >= FULL_PRECISION
            for w, a in self.resolve(layer_names).values()
        )


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the model's conv and linear layers, in definition order (first to last)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def prepare(
    model: nn.Module,
    plan: PrecisionPlan,
    alpha_init: float = 10.0,
    alpha_layers: dict[str, float] | None = None,
) -> nn.Module:
    """Swap `model`'s layers in place for quantized ones, as `plan` says, and return it.

    Conv/linear layers become `QuantConv2d`/`QuantLinear`; the activation that follows a layer
    (the model's `activation_of` map) becomes a `PACT` with that layer's `act_bits`, its alpha
    initialised from `alpha_layers[name]` or `alpha_init`. Full-precision layers are swapped
    too, so that every plan gives the same parameter names (FP weights load into any plan).
    """
    alpha_layers = alpha_layers or {}
    names = quantizable_layers(model)
    bits = plan.resolve(names)
    activation_of: dict[str, str] = getattr(model, "activation_of", {})
    for name in names:
        weight_bits, act_bits = bits[name]
        layer = model.get_submodule(name)
        if isinstance(layer, nn.Conv2d):
            _set_submodule(model, name, QuantConv2d.from_conv(layer, weight_bits))
        else:
            _set_submodule(model, name, QuantLinear.from_linear(layer, weight_bits))
        if name in activation_of:
            alpha = alpha_layers.get(name, alpha_init)
            _set_submodule(model, activation_of[name], PACT(act_bits, alpha))
    return model


@torch.no_grad()
def calibrate_alphas(model: nn.Module, x: torch.Tensor, method: str = "max",
                     percentile: float = 99.9, batch_size: int = 512) -> dict[str, float]:
    """Set every quantizing PACT's alpha from the activations it sees on `x` (post-training
    quantization's calibration): their `max`, or their `percentile`-th percentile.

    Activations are observed unclipped (each PACT acts as a ReLU meanwhile), after the
    quantized weights, so the ranges are those the quantized model will produce.
    """
    pacts = {n: m for n, m in model.named_modules()
             if isinstance(m, PACT) and m.bits < FULL_PRECISION}
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in pacts}
    bits = {n: m.bits for n, m in pacts.items()}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen[n].append(inp[0].flatten()))
             for n, m in pacts.items()]
    was_training = model.training
    model.eval()
    try:
        for m in pacts.values():
            m.bits = FULL_PRECISION
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    finally:
        for h in hooks:
            h.remove()
        for n, m in pacts.items():
            m.bits = bits[n]
        model.train(was_training)
    alphas = {}
    for n, m in pacts.items():
        values = torch.cat(seen[n]).clamp_min(0).float()
        if method == "max":
            level = values.max()
        else:
            # a strided sample of ~1M values: torch.quantile sorts, and the full activations of
            # 1024 images are tens of millions of values for a percentile that needs far fewer
            step = max(1, values.numel() // 2**20)
            level = torch.quantile(values[::step], percentile / 100)
        m.alpha.fill_(max(float(level), 1e-3))
        alphas[n] = float(m.alpha)
    return alphas
