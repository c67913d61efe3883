"""What a precision plan costs: model size in bits and bit-operations per inference.

- `model_bits`: every quantizable layer's weights at their weight bits, everything else
  (biases, batch-norm parameters) at 32 bits. PACT's alphas are not counted (one scalar each).
- `bitops`: per layer, multiply-accumulates x weight bits x input activation bits, where the
  input's bits are those of the activation that feeds the layer (the model's `input_of`),
  and 8 for the image itself (pixels are 8-bit).
"""

from __future__ import annotations

import torch
from torch import nn

from saliq.modes import eval_mode
from saliq.quant.api import pact_modules, weight_parameters
from saliq.quant.layers import QuantConv2d, QuantLinear
from saliq.quant.plan import FULL_PRECISION

__all__ = ["IMAGE_BITS", "bitops", "layer_macs", "model_bits"]

IMAGE_BITS = 8


def model_bits(model: nn.Module) -> int:
    quantized = {id(m.weight): m.weight_bits for m in model.modules()
                 if isinstance(m, QuantConv2d | QuantLinear)}
    return sum(p.numel() * quantized.get(id(p), FULL_PRECISION)
               for p in weight_parameters(model))


@torch.no_grad()
def layer_macs(model: nn.Module, in_channels: int, image_size: int) -> dict[str, int]:
    """Multiply-accumulates of each conv/linear layer for one image."""
    macs: dict[str, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            def conv_hook(mod, _inp, out, name=name):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                macs[name] = out[0].numel() * k
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            def linear_hook(mod, _inp, _out, name=name):
                macs[name] = mod.in_features * mod.out_features
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        with eval_mode(model):
            device = next(model.parameters()).device
            model(torch.zeros(1, in_channels, image_size, image_size, device=device))
    finally:
        for h in hooks:
            h.remove()
    return macs


def bitops(model: nn.Module, in_channels: int, image_size: int) -> int:
    pacts = pact_modules(model)
    act_bits = {layer: pacts[act].bits for layer, act in model.activation_of.items()
                if act in pacts}
    total = 0
    for name, macs in layer_macs(model, in_channels, image_size).items():
        source = model.input_of.get(name)
        in_bits = IMAGE_BITS if source is None else act_bits.get(source, FULL_PRECISION)
        total += macs * model.get_submodule(name).weight_bits * in_bits
    return total
