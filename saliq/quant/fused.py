"""PACT's forward and backward as fused CPU kernels, built with `torch.compile`.

Eagerly, PACT's forward is six passes over an activation (clip, then the formula's five
operations, kept in their order so the values are DESIGN.md's bit for bit) and its backward
two more, each streaming the whole tensor through memory. Inductor fuses each side into one
loop: the same operations per element, in the same order, so the values are the same; only
the alpha gradient's sum adds in another order (float rounding). On 2 CPU cores a 4-bit QAT
step of the seed CNN takes 84.7 ms fused against 88.6 ms eagerly (`bench/compile.py`).

The kernels are built once per process, on first use, on flattened tensors with dynamic
sizes (one build serves every layer, batch size and bit-width: 1-2 s, then inductor's
on-disk cache). One build each for a whole sweep in one worker: dynamo guards on whatever
distinguishes its inputs, so the kernels only ever see what one graph serves: 1-D tensors
that are not views (a view's guards are on its base: the layer's rank and sizes, batch 1
specialised), that need no gradient, under no grad mode (autograd is the caller's
`autograd.Function`), of at least 2 elements (sizes 0 and 1 are specialised: the caller keeps
those eager). The alpha gradient adds in float64: a float32 sum above 4096 elements would be
a graph of its own, and its rounding would depend on the CPU's vector width; the float64 sum
rounded to float32 is the same on every CPU, and costs nothing measurable
(`tests/quant/test_fused_compiles.py` runs 50 mixed trials in one process: one build each).
Where they cannot be built (no C++ compiler, or `SALIQ_COMPILE=0`), PACT stays eager.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

import torch

__all__ = ["pact_kernels"]

log = logging.getLogger("saliq")

Kernels = tuple[Callable[..., torch.Tensor], Callable[..., tuple[torch.Tensor, torch.Tensor]]]


def _forward(x: torch.Tensor, alpha: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    y = torch.minimum(torch.clamp_min(x, 0.0), alpha)  # clip(x, 0, alpha)
    return torch.round(y * levels / alpha) * alpha / levels


def _backward(grad: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    zero = torch.zeros((), dtype=grad.dtype)
    grad_x = torch.where((x >= 0) & (x < alpha), grad, zero)
    return grad_x, torch.where(x >= alpha, grad, zero).sum(dtype=torch.float64).to(grad.dtype)


def _plain(t: torch.Tensor, shape: tuple[int, ...] = (-1,)) -> torch.Tensor:
    # 1-D (or 0-dim), not a view (the detach of a view has no _base), no requires_grad
    return t.reshape(shape).detach()


@functools.cache
def pact_kernels() -> Kernels | None:
    """(forward(x, alpha, levels), backward(grad, x, alpha) -> (grad_x, grad_alpha)) for
    contiguous float32 CPU tensors of 2 elements or more, returned flat (`levels` a 0-dim
    tensor: one build for every bit-width), or None. They record no autograd graph."""
    if os.environ.get("SALIQ_COMPILE", "1") == "0":
        return None
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA" notes

    def forward(x: torch.Tensor, alpha: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return compiled_forward(_plain(x), _plain(alpha, ()), _plain(levels, ()))

    def backward(grad: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return compiled_backward(_plain(grad), _plain(x), _plain(alpha, ()))

    try:
        compiled_forward = torch.compile(_forward, dynamic=True)
        compiled_backward = torch.compile(_backward, dynamic=True)
        # built here, as the calls will be (a failure falls back at once)
        x, alpha = torch.linspace(-1.0, 3.0, 4099), torch.tensor(2.0)
        forward(x, alpha, torch.tensor(3.0))
        backward(torch.ones_like(x), x, alpha)
    except Exception as e:  # noqa: BLE001 - any build failure means: stay eager
        log.warning("PACT runs eagerly: torch.compile could not build its kernels (%s)",
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None
    return forward, backward
