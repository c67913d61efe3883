"""The quantized modules: `PACT` (a ReLU with a learnable clip) and DoReFa-weight layers.

Each shows its bits (and alpha) in its repr. The quant layers share their source layer's
parameters (same tensors, same names), so FP weights load into any plan.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from saliq.quant.dorefa import scaled_dorefa_weight
from saliq.quant.pact import pact
from saliq.quant.plan import FULL_PRECISION, check_bits

__all__ = ["PACT", "QuantConv2d", "QuantLinear"]


class PACT(nn.Module):
    """A ReLU replacement with a learnable clipping level `alpha` and `bits` bits.

    `alpha` is an `nn.Parameter` from `__init__`: an optimiser created right after the model
    trains it (nothing is created lazily).
    """

    def __init__(self, bits: int = FULL_PRECISION, alpha_init: float = 10.0) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pact(x, self.alpha, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, alpha={self.alpha.item():.4g}"


class _DoReFaWeights:
    """What the quant layers share: the source layer's parameters (same tensors, same names),
    its weights DoReFa-quantized to `weight_bits` in the forward pass, the bits in the repr."""

    weight_bits: int = FULL_PRECISION

    @classmethod
    def _wrap(cls, layer: nn.Module, weight_bits: int):
        q = cls.__new__(cls)
        q.__dict__ = layer.__dict__.copy()  # shares the parameters: no copy, same names
        q.weight_bits = check_bits(weight_bits)
        return q

    def quantized_weight(self) -> torch.Tensor:
        return scaled_dorefa_weight(self.weight, self.weight_bits)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}"


class QuantConv2d(_DoReFaWeights, nn.Conv2d):
    """`nn.Conv2d` whose weights are DoReFa-quantized to `weight_bits` in the forward pass."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, weight_bits: int) -> QuantConv2d:
        return cls._wrap(conv, weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantLinear(_DoReFaWeights, nn.Linear):
    """`nn.Linear` whose weights are DoReFa-quantized to `weight_bits` in the forward pass."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_bits: int) -> QuantLinear:
        return cls._wrap(linear, weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)
