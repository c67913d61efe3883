"""DoReFa weights against DESIGN.md's formula, exactly; the straight-through gradient, and the
layers' rescaled variant's closed form against autograd."""

from __future__ import annotations

import pytest
import torch
from quant_references import BITS, dorefa_reference, exact

from saliq.quant.dorefa import dorefa_weight, scaled_dorefa_weight

# --- DoReFa ------------------------------------------------------------------------------


@pytest.mark.parametrize("k", BITS)
def test_dorefa_forward_is_the_design_formula_exactly(k):
    w = torch.randn(64, 32, 3, generator=torch.Generator().manual_seed(k)) * 0.3
    out = dorefa_weight(w, k)
    exact(out, dorefa_reference(w, k))
    assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("k", (1, 2, 4, 8))
def test_dorefa_gradient_is_straight_through(k):
    g = torch.Generator().manual_seed(k)
    w = (torch.randn(32, 16, generator=g) * 0.5).requires_grad_()
    upstream = torch.randn(32, 16, generator=g)
    (grad,) = torch.autograd.grad(dorefa_weight(w, k), w, upstream)
    (expected,) = torch.autograd.grad(dorefa_reference(w, k, rounding=lambda t: t), w, upstream)
    exact(grad, expected)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("k", (1, 2, 4, 8))
@pytest.mark.parametrize("shape", ((32, 16), (64, 32, 3, 3), (128, 9216)))
def test_scaled_dorefa_closed_form_gradient_matches_autograd(k, shape):
    # the layers' DoReFa: forward values exact, gradient equal to autograd's through the whole
    # chain (max|tanh(w)| included) up to rounding
    g = torch.Generator().manual_seed(k)
    w = (torch.randn(*shape, generator=g) * 0.5).requires_grad_()
    upstream = torch.randn(*shape, generator=g)
    out = scaled_dorefa_weight(w, k)
    (grad,) = torch.autograd.grad(out, w, upstream)
    w_ref = w.detach().clone().requires_grad_()
    th = torch.tanh(w_ref)
    expected_out = dorefa_reference(w_ref, k, rounding=lambda t: t + (t.round() - t).detach())
    expected_out = expected_out * th.abs().max().detach()
    (expected,) = torch.autograd.grad(expected_out, w_ref, upstream)
    exact(out, dorefa_reference(w.detach(), k) * th.abs().max().detach())
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
    out = scaled_dorefa_weight(w, 2)
    out.backward(torch.ones(4, 4))
    assert out.abs().sum() == 0 and w.grad.abs().sum() == 0


def test_dorefa_32_bits_is_identity():
    w = torch.randn(8, 8)
    assert dorefa_weight(w, 32) is w
    assert scaled_dorefa_weight(w, 32) is w


def test_scaled_dorefa_gradient_of_a_strided_upstream_is_the_contiguous_ones():
    # a convolution's double backward hands the weights a strided gradient; the closed form's
    # correction at the argmax must not be written to a copy and lost
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 6, generator=g, requires_grad=True)
    strided = torch.randn(6, 8, generator=g).t()
    assert not strided.is_contiguous()
    (a,) = torch.autograd.grad(scaled_dorefa_weight(w, 2), w, strided)
    (b,) = torch.autograd.grad(scaled_dorefa_weight(w, 2), w, strided.contiguous())
    exact(a, b)
