"""Hand-written references for the quant tests: DESIGN.md's formulas, inputs, exact checks."""

from __future__ import annotations

import torch

BITS = range(1, 9)
ALPHAS = (0.7, 1.0, 3.3, 10.0)


def inputs(alpha: float, seed: int = 0) -> torch.Tensor:
    """Random activations around [0, alpha], with the boundary values 0 and alpha included."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, generator=g) * alpha
    return torch.cat([x, torch.tensor([0.0, alpha, -0.0, -alpha, 2 * alpha])])


def exact(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def pact_reference(x: torch.Tensor, alpha: torch.Tensor, k: int) -> torch.Tensor:
    # DESIGN.md: y = clip(x, 0, alpha), y_q = round(y * (2^k - 1) / alpha) * alpha / (2^k - 1)
    y = torch.clamp(x, torch.zeros_like(alpha), alpha)
    return torch.round(y * (2**k - 1) / alpha) * alpha / (2**k - 1)


def dorefa_reference(w: torch.Tensor, k: int, rounding=torch.round) -> torch.Tensor:
    # DESIGN.md: t = tanh(w) / (2 max|tanh(w)|) + 1/2, w_q = 2 round(t (2^k - 1)) / (2^k - 1) - 1
    th = torch.tanh(w)
    t = th / (2 * th.abs().max()) + 0.5
    return 2 * rounding(t * (2**k - 1)) / (2**k - 1) - 1
