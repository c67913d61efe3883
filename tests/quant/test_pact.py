"""PACT against DESIGN.md's formula, exactly, on the fused and the eager path; its
straight-through gradients; 32 bits is a ReLU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from quant_references import ALPHAS, BITS, exact, inputs, pact_reference

from saliq.quant import fused
from saliq.quant.layers import PACT
from saliq.quant.pact import pact

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
    x, alpha = inputs(a), torch.tensor(a)
    exact(pact(x, alpha, k), pact_reference(x, alpha, k))


@pytest.mark.parametrize("k", (1, 2, 4, 8))
@pytest.mark.parametrize("a", (1.0, 3.3))
def test_pact_gradients_match_the_straight_through_reference(k, a, pact_path):
    x = inputs(a, seed=k).requires_grad_()
    alpha = torch.tensor(a, requires_grad=True)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    grad_x, grad_alpha = torch.autograd.grad(pact(x, alpha, k), (x, alpha), upstream)

    xd = x.detach()
    # d y_q / d x = 1 where 0 <= x < alpha, else 0; d y_q / d alpha = 1 where x >= alpha
    exact(grad_x, upstream * ((xd >= 0) & (xd < a)).float())
    terms = upstream.double() * (xd >= a).double()
    expected = terms.sum().item()
    if pact_path == "fused":
        # the kernel adds in float64 and rounds once to float32: the exact sum to within two
        # float32 ulps on any CPU (its vector width changes the order, not the result)
        assert grad_alpha.item() == pytest.approx(expected, rel=2**-23)
    else:
        # torch.sum adds float32 in an order that depends on the CPU's vector width: its
        # rounding error grows like sqrt(n) * eps * sum|terms| (a random walk of roundings;
        # measured within 0.12 of that on 8 and 16 lanes), here with a margin of 16
        n = int((xd >= a).sum())
        tolerance = 2 * n**0.5 * 2**-24 * float(terms.abs().sum())
        assert grad_alpha.item() == pytest.approx(expected, abs=tolerance)
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
        exact(fused_out, eager_out)
        exact(fused_grads[0], eager_grads[0])
        assert fused_grads[1].item() == pytest.approx(eager_grads[1].item(), rel=1e-5)


def test_pact_32_bits_is_relu():
    x = inputs(3.0).requires_grad_()
    alpha = torch.tensor(3.0, requires_grad=True)
    out = pact(x, alpha, 32)
    exact(out, F.relu(x))
    assert out.max() > 3.0  # no clipping
    (gx,) = torch.autograd.grad(out.sum(), x)
    exact(gx, (x.detach() > 0).float())
    assert PACT(32, 3.0)(x).equal(F.relu(x))


