"""The architectures: shapes, the seed CNN's exact layers, FP weights loading into any plan."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saliq.models import ARCHITECTURES, layer_names
from saliq.models.networks import build_model
from saliq.quant.layers import PACT, QuantConv2d, QuantLinear
from saliq.quant.plan import BitsPair, LayerBits, PrecisionPlan

INPUTS = {"seed-cnn": (1, 28), "deep-cnn": (1, 28), "resnet-small": (3, 32)}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("plan", [PrecisionPlan(), PrecisionPlan.uniform(4, 2),
                                  PrecisionPlan(default=BitsPair(weight_bits=2, act_bits=2),
                                                first=LayerBits(weight_bits=8),
                                                last=LayerBits(weight_bits=8))])
def test_each_architecture_gives_logits_for_its_input(arch, plan):
    channels, size = INPUTS[arch]
    torch.manual_seed(0)
    model = build_model(arch, plan, in_channels=channels, image_size=size)
    logits = model(torch.randn(3, channels, size, size))
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()
    names = layer_names(arch)
    quantized = [n for n, m in model.named_modules() if isinstance(m, QuantConv2d | QuantLinear)]
    assert names == quantized
    bits = plan.resolve(names)
    for name in names:
        assert model.get_submodule(name).weight_bits == bits[name][0]
        if name in model.activation_of:
            act = model.get_submodule(model.activation_of[name])
            assert isinstance(act, PACT) and act.bits == bits[name][1]
    assert set(model.input_of) == set(names)
    model.get_submodule(model.gradcam_layer)  # exists


def test_seed_cnn_is_exactly_the_papers_cnn():
    model = build_model("seed-cnn", PrecisionPlan())
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.MaxPool2d)]
    described = []
    for m in layers:
        if isinstance(m, nn.Conv2d):
            described.append(("conv", m.out_channels, m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.Linear):
            described.append(("fc", m.out_features))
        else:
            described.append(("maxpool", m.kernel_size))
    assert described == [("conv", 32, (3, 3), (1, 1), (0, 0)), ("conv", 64, (3, 3), (1, 1), (0, 0)),
                         ("maxpool", 2), ("fc", 128), ("fc", 10)]
    assert model.conv1.in_channels == 1 and model.fc1.in_features == 64 * 12 * 12
    assert layer_names("seed-cnn") == ["conv1", "conv2", "fc1", "fc2"]
    # Execution order too: the max-pool sits between conv2 and fc1.
    order = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
             for n, m in model.named_modules() if n in ("conv1", "conv2", "pool", "fc1", "fc2")]
    model(torch.zeros(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert order == ["conv1", "conv2", "pool", "fc1", "fc2"]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_fp_state_dict_loads_into_a_quantized_model(arch):
    channels, size = INPUTS[arch]
    torch.manual_seed(0)
    fp = build_model(arch, PrecisionPlan(), in_channels=channels, image_size=size, alpha_init=10.0)
    quant = build_model(arch, PrecisionPlan.uniform(2, 4), in_channels=channels, image_size=size,
                        alpha_init=3.0)
    assert set(fp.state_dict()) == set(quant.state_dict())
    quant.load_state_dict(fp.state_dict())  # strict: same names, same shapes
    differ = [k for k, v in fp.state_dict().items() if not torch.equal(v, quant.state_dict()[k])]
    assert differ == []
    # Loading everything but the alphas leaves only the alphas differing.
    quant = build_model(arch, PrecisionPlan.uniform(2, 4), in_channels=channels, image_size=size,
                        alpha_init=3.0)
    result = quant.load_state_dict(
        {k: v for k, v in fp.state_dict().items() if not k.endswith("alpha")}, strict=False)
    assert result.missing_keys and all(k.endswith("alpha") for k in result.missing_keys)
    differ = [k for k, v in fp.state_dict().items() if not torch.equal(v, quant.state_dict()[k])]
    assert differ == result.missing_keys


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg", PrecisionPlan())
