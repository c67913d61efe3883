"""The quant layers: at most 2^k values per k-bit tensor, and the effective weights are what
the layers compute with."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from quant_references import BITS, exact
from torch import nn

from saliq.quant.dorefa import dorefa_weight, scaled_dorefa_weight
from saliq.quant.layers import QuantConv2d, QuantLinear
from saliq.quant.pact import pact

# --- at most 2^k values ------------------------------------------------------------------


@pytest.mark.parametrize("k", BITS)
def test_a_k_bit_tensor_takes_at_most_2_to_the_k_values(k):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(20_000, generator=g) * 5
    assert pact(x, torch.tensor(3.3), k).unique().numel() <= 2**k
    w = torch.randn(20_000, generator=g) * 0.2
    assert dorefa_weight(w, k).unique().numel() <= 2**k

    conv = QuantConv2d.from_conv(nn.Conv2d(16, 32, 3), k)
    linear = QuantLinear.from_linear(nn.Linear(256, 128), k)
    for layer in (conv, linear):
        effective = scaled_dorefa_weight(layer.weight, layer.weight_bits)
        assert effective.unique().numel() <= 2**k
        assert effective.unique().numel() == 2**k or k >= 7  # the levels are actually used
    # ...and the effective weight is what the layers compute with.
    x4 = torch.randn(2, 16, 8, 8, generator=g)
    exact(conv(x4), F.conv2d(x4, scaled_dorefa_weight(conv.weight, k), conv.bias))
    x2 = torch.randn(3, 256, generator=g)
    exact(linear(x2), F.linear(x2, scaled_dorefa_weight(linear.weight, k), linear.bias))


