"""`prepare` swaps layers as the plan says; reprs show bits; alphas are parameters from
__init__; calibration sets alphas from activations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saliq.models.networks import build_model
from saliq.quant.api import calibrate_alphas, prepare, quantizable_layers
from saliq.quant.layers import PACT, QuantConv2d, QuantLinear
from saliq.quant.plan import BitsPair, LayerBits, PrecisionPlan

# --- prepare -----------------------------------------------------------------------------


def _plain_seed_cnn():
    from saliq.models.networks import SeedCNN

    torch.manual_seed(0)
    return SeedCNN()


def test_prepare_swaps_layers_and_activations_as_the_plan_says():
    model = _plain_seed_cnn()
    weights = {n: p for n, p in model.named_parameters()}
    plan = PrecisionPlan(default=BitsPair(weight_bits=4, act_bits=2),
                         layers={"conv2": LayerBits(act_bits=8), "fc2": LayerBits(weight_bits=8)})
    assert prepare(model, plan, alpha_init=6.0, alpha_layers={"fc1": 3.0}) is model

    assert isinstance(model.conv1, QuantConv2d) and isinstance(model.conv2, QuantConv2d)
    assert isinstance(model.fc1, QuantLinear) and isinstance(model.fc2, QuantLinear)
    assert [model.get_submodule(n).weight_bits for n in ("conv1", "conv2", "fc1", "fc2")] == [
        4, 4, 4, 8]
    acts = {n: model.get_submodule(a) for n, a in model.activation_of.items()}
    assert all(isinstance(a, PACT) for a in acts.values())
    assert {n: a.bits for n, a in acts.items()} == {"conv1": 2, "conv2": 8, "fc1": 2}
    assert {n: a.alpha.item() for n, a in acts.items()} == {"conv1": 6.0, "conv2": 6.0,
                                                            "fc1": 3.0}
    assert isinstance(model.pool, nn.MaxPool2d) and isinstance(model.drop1, nn.Dropout)
    # The quant layers share the original parameters (same names, same tensors).
    for name, p in weights.items():
        assert model.get_parameter(name) is p
    assert quantizable_layers(model) == ["conv1", "conv2", "fc1", "fc2"]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_extra_repr_shows_bits_and_alpha():
    model = prepare(_plain_seed_cnn(), PrecisionPlan.uniform(4, 2), alpha_init=6.5)
    text = repr(model)
    assert "PACT(bits=2, alpha=6.5)" in text
    assert "weight_bits=4" in repr(model.conv1) and "kernel_size=(3, 3)" in repr(model.conv1)
    assert "in_features=128, out_features=10" in repr(model.fc2)
    assert "weight_bits=4" in repr(model.fc2)


def test_pact_alpha_is_a_parameter_from_init():
    act = PACT(4, 3.0)
    assert isinstance(act.alpha, nn.Parameter) and act.alpha.requires_grad
    assert dict(act.named_parameters()) == {"alpha": act.alpha}
    # An optimiser created right after the model exists trains alpha: nothing is lazy.
    model = build_model("seed-cnn", PrecisionPlan.uniform(2), alpha_init=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.act1.alpha.item()
    F.cross_entropy(model(torch.randn(8, 1, 28, 28) * 3), torch.arange(8)).backward()
    optimizer.step()
    assert model.act1.alpha.item() != before
    names = [n for n, _ in model.named_parameters() if n.endswith("alpha")]
    assert names == ["act1.alpha", "act2.alpha", "act3.alpha"]


# --- calibration -------------------------------------------------------------------------


def test_calibrate_alphas_sets_alpha_from_activations():
    torch.manual_seed(0)
    linear = QuantLinear.from_linear(nn.Linear(16, 64), 4)
    model = nn.Sequential(linear, PACT(4, 10.0), nn.Linear(64, 8), PACT(32, 10.0))
    model.train()
    x = torch.randn(300, 16)
    pre = F.relu(linear(x)).flatten()

    alphas = calibrate_alphas(model, x, "max", batch_size=128)
    assert alphas == {"1": pytest.approx(pre.max().item())}
    assert model[1].alpha.item() == pytest.approx(pre.max().item())
    assert model[3].alpha.item() == 10.0  # full precision: nothing to calibrate
    assert model.training and model[1].bits == 4
    assert not model[1]._forward_pre_hooks

    calibrate_alphas(model, x, "percentile", percentile=90.0)
    assert model[1].alpha.item() == pytest.approx(torch.quantile(pre, 0.9).item(), rel=1e-6)
    assert 0 < model[1].alpha.item() < pre.max().item()
