"""PACT, DoReFa, the quant layers and precision plans against DESIGN.md's formulas, exactly."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from saliq import fused
from saliq.models import build_model
from saliq.quant import (
    PACT,
    BitsPair,
    LayerBits,
    PrecisionPlan,
    QuantConv2d,
    QuantLinear,
    _scaled_dorefa,
    calibrate_alphas,
    check_bits,
    dorefa_weight,
    pact,
    prepare,
    quantizable_layers,
)

BITS = range(1, 9)
ALPHAS = (0.7, 1.0, 3.3, 10.0)


def _inputs(alpha: float, seed: int = 0) -> torch.Tensor:
    """Random activations around [0, alpha], with the boundary values 0 and alpha included."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, generator=g) * alpha
    return torch.cat([x, torch.tensor([0.0, alpha, -0.0, -alpha, 2 * alpha])])


def _exact(a: torch.Tensor, b: torch.Tensor) -> None:
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


# --- PACT --------------------------------------------------------------------------------


NO_KERNELS = ("torch.compile could not build PACT's fused kernels here: they need a C++ "
              "compiler (gcc); saliq then runs PACT eagerly")


@pytest.fixture(params=["fused", "eager"])
def pact_path(request, monkeypatch):
    """Each PACT test runs on the CPU's fused kernels (saliq.fused) and on the eager path."""
    if request.param == "eager":
        monkeypatch.setattr(fused, "pact_kernels", lambda: None)
    else:
        assert fused.pact_kernels() is not None, NO_KERNELS
    return request.param


@pytest.mark.parametrize("k", BITS)
@pytest.mark.parametrize("a", ALPHAS)
def test_pact_forward_is_the_design_formula_exactly(k, a, pact_path):
    x, alpha = _inputs(a), torch.tensor(a)
    _exact(pact(x, alpha, k), pact_reference(x, alpha, k))


@pytest.mark.parametrize("k", (1, 2, 4, 8))
@pytest.mark.parametrize("a", (1.0, 3.3))
def test_pact_gradients_match_the_straight_through_reference(k, a, pact_path):
    x = _inputs(a, seed=k).requires_grad_()
    alpha = torch.tensor(a, requires_grad=True)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    grad_x, grad_alpha = torch.autograd.grad(pact(x, alpha, k), (x, alpha), upstream)

    xd = x.detach()
    # d y_q / d x = 1 where 0 <= x < alpha, else 0; d y_q / d alpha = 1 where x >= alpha
    _exact(grad_x, upstream * ((xd >= 0) & (xd < a)).float())
    # a sum: the fused kernel adds in another order than torch.sum, equal up to rounding
    expected = (upstream.double() * (xd >= a).double()).sum().item()
    assert grad_alpha.item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert grad_alpha.shape == alpha.shape


@pytest.mark.parametrize("shape", [(128, 8, 24, 24), (128, 9216)])
def test_pact_fused_and_eager_agree_on_layer_sized_activations(shape):
    """A conv and a flattened activation of the seed CNN's size, 2 and 4 bits: the fused
    kernels give the eager values and x-gradients exactly, the alpha gradient to rounding."""
    assert fused.pact_kernels() is not None, NO_KERNELS
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3).requires_grad_()
    upstream = torch.randn(shape, generator=g)
    for k in (2, 4):
        alpha = torch.tensor(3.3, requires_grad=True)
        fused_out = pact(x, alpha, k)
        fused_grads = torch.autograd.grad(fused_out, (x, alpha), upstream)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fused, "pact_kernels", lambda: None)
            eager_out = pact(x, alpha, k)
            eager_grads = torch.autograd.grad(eager_out, (x, alpha), upstream)
        _exact(fused_out, eager_out)
        _exact(fused_grads[0], eager_grads[0])
        assert fused_grads[1].item() == pytest.approx(eager_grads[1].item(), rel=1e-5)


def test_pact_32_bits_is_relu():
    x = _inputs(3.0).requires_grad_()
    alpha = torch.tensor(3.0, requires_grad=True)
    out = pact(x, alpha, 32)
    _exact(out, F.relu(x))
    assert out.max() > 3.0  # no clipping
    (gx,) = torch.autograd.grad(out.sum(), x)
    _exact(gx, (x.detach() > 0).float())
    assert PACT(32, 3.0)(x).equal(F.relu(x))


# --- DoReFa ------------------------------------------------------------------------------


@pytest.mark.parametrize("k", BITS)
def test_dorefa_forward_is_the_design_formula_exactly(k):
    w = torch.randn(64, 32, 3, generator=torch.Generator().manual_seed(k)) * 0.3
    out = dorefa_weight(w, k)
    _exact(out, dorefa_reference(w, k))
    assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("k", (1, 2, 4, 8))
def test_dorefa_gradient_is_straight_through(k):
    g = torch.Generator().manual_seed(k)
    w = (torch.randn(32, 16, generator=g) * 0.5).requires_grad_()
    upstream = torch.randn(32, 16, generator=g)
    (grad,) = torch.autograd.grad(dorefa_weight(w, k), w, upstream)
    (expected,) = torch.autograd.grad(dorefa_reference(w, k, rounding=lambda t: t), w, upstream)
    _exact(grad, expected)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("k", (1, 2, 4, 8))
@pytest.mark.parametrize("shape", ((32, 16), (64, 32, 3, 3), (128, 9216)))
def test_scaled_dorefa_closed_form_gradient_matches_autograd(k, shape):
    # the layers' DoReFa: forward values exact, gradient equal to autograd's through the whole
    # chain (max|tanh(w)| included) up to rounding
    g = torch.Generator().manual_seed(k)
    w = (torch.randn(*shape, generator=g) * 0.5).requires_grad_()
    upstream = torch.randn(*shape, generator=g)
    out = _scaled_dorefa(w, k)
    (grad,) = torch.autograd.grad(out, w, upstream)
    w_ref = w.detach().clone().requires_grad_()
    th = torch.tanh(w_ref)
    expected_out = dorefa_reference(w_ref, k, rounding=lambda t: t + (t.round() - t).detach())
    expected_out = expected_out * th.abs().max().detach()
    (expected,) = torch.autograd.grad(expected_out, w_ref, upstream)
    _exact(out, dorefa_reference(w.detach(), k) * th.abs().max().detach())
    argmax = th.detach().abs().argmax()
    others = torch.arange(w.numel()) != argmax
    torch.testing.assert_close(grad.reshape(-1)[others], expected.reshape(-1)[others])
    # the max's gradient sums over every weight: float tolerance for a million-term sum
    torch.testing.assert_close(grad.reshape(-1)[argmax], expected.reshape(-1)[argmax],
                               rtol=1e-4, atol=1e-5)
    # and reaches the weight that holds the max
    plain = upstream.reshape(-1)[argmax] * (1 - th.detach().reshape(-1)[argmax] ** 2)
    assert not torch.isclose(grad.reshape(-1)[argmax], plain)


def test_scaled_dorefa_of_zero_weights_is_zero_with_zero_gradient():
    w = torch.zeros(4, 4, requires_grad=True)
    out = _scaled_dorefa(w, 2)
    out.backward(torch.ones(4, 4))
    assert out.abs().sum() == 0 and w.grad.abs().sum() == 0


def test_dorefa_32_bits_is_identity():
    w = torch.randn(8, 8)
    assert dorefa_weight(w, 32) is w
    assert _scaled_dorefa(w, 32) is w


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
        effective = _scaled_dorefa(layer.weight, layer.weight_bits)
        assert effective.unique().numel() <= 2**k
        assert effective.unique().numel() == 2**k or k >= 7  # the levels are actually used
    # ...and the effective weight is what the layers compute with.
    x4 = torch.randn(2, 16, 8, 8, generator=g)
    _exact(conv(x4), F.conv2d(x4, _scaled_dorefa(conv.weight, k), conv.bias))
    x2 = torch.randn(3, 256, generator=g)
    _exact(linear(x2), F.linear(x2, _scaled_dorefa(linear.weight, k), linear.bias))


# --- precision plans ---------------------------------------------------------------------


@pytest.mark.parametrize("bits", [*range(1, 9), 32])
def test_plan_accepts_1_to_8_and_32_bits(bits):
    plan = PrecisionPlan(default=BitsPair(weight_bits=bits, act_bits=bits),
                         layers={"fc2": LayerBits(act_bits=bits)})
    assert plan.default.weight_bits == bits
    assert check_bits(bits) == bits


@pytest.mark.parametrize("bad", [0, 9, 16, 64, -1, 4.5, True, "4"])
@pytest.mark.parametrize("where", ["default", "first", "layers"])
def test_plan_rejects_impossible_bits_naming_the_value(bad, where):
    data = {"default": {"weight_bits": bad}} if where == "default" else (
        {"first": {"act_bits": bad}} if where == "first" else
        {"layers": {"conv1": {"weight_bits": bad}}})
    with pytest.raises(ValidationError) as err:
        PrecisionPlan.model_validate(data)
    text = str(err.value)
    assert f"{bad!r} is not a bit-width (use 1-8 or 32)" in text
    with pytest.raises(ValueError, match=r"use 1-8 or 32"):
        check_bits(bad)


def test_resolve_order_is_default_then_first_last_then_layers():
    plan = PrecisionPlan(
        default=BitsPair(weight_bits=2, act_bits=2),
        first=LayerBits(weight_bits=8),
        last=LayerBits(act_bits=8, weight_bits=8),
        layers={"fc1": LayerBits(act_bits=4), "fc2": LayerBits(weight_bits=3),
                "conv1": LayerBits(act_bits=6)},
    )
    assert plan.resolve(["conv1", "conv2", "fc1", "fc2"]) == {
        "conv1": (8, 6),  # first's weights, the layer's own activation
        "conv2": (2, 2),  # default
        "fc1": (2, 4),
        "fc2": (3, 8),  # layers beats last for the field it sets; last gives the other
    }
    assert list(plan.resolve(["fc2", "fc1", "conv1"])) == ["fc2", "fc1", "conv1"]
    assert PrecisionPlan(first=LayerBits(weight_bits=8), last=LayerBits(weight_bits=4)
                         ).resolve(["only"]) == {"only": (4, 32)}  # one layer: last wins


def test_resolve_rejects_unknown_layers():
    plan = PrecisionPlan(layers={"conv9": LayerBits(act_bits=2)})
    with pytest.raises(ValueError, match=r"no layer named conv9 \(layers: conv1, fc2\)"):
        plan.resolve(["conv1", "fc2"])
    assert plan.unknown_layers(["conv1", "fc2"]) == ["conv9"]


def test_plan_round_trips_through_plain_data():
    plan = PrecisionPlan(default=BitsPair(weight_bits=4, act_bits=2), last=LayerBits(weight_bits=8),
                         layers={"stage1.0.conv1": LayerBits(act_bits=3)})
    dumped = plan.model_dump()
    assert json.loads(json.dumps(dumped)) == dumped  # plain, serialisable data
    assert PrecisionPlan.model_validate(dumped) == plan
    assert PrecisionPlan.model_validate_json(plan.model_dump_json()) == plan
    assert PrecisionPlan.uniform(4) == PrecisionPlan(default=BitsPair(weight_bits=4, act_bits=4))
    with pytest.raises(ValidationError, match="Extra inputs"):
        PrecisionPlan.model_validate({"default": {"weight_bits": 4, "bits": 2}})


def test_plan_full_precision():
    assert PrecisionPlan().is_full_precision(["conv1", "fc2"])
    assert not PrecisionPlan(layers={"fc2": LayerBits(act_bits=8)}).is_full_precision(
        ["conv1", "fc2"])


# --- prepare -----------------------------------------------------------------------------


def _plain_seed_cnn():
    from saliq.models import SeedCNN

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
