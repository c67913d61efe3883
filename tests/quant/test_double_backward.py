"""Second-order gradients through the straight-through estimators, for losses that train
through a model's own input gradients (explanation distillation): `gradgradcheck` on PACT's
eager and fused paths and on DoReFa's, and a backward with create_graph=True that gives the
first-order values of the plain one."""

from __future__ import annotations

import pytest
import torch
from quant_references import exact
from torch.autograd import gradgradcheck

from saliq.quant import fused
from saliq.quant.dorefa import dorefa_weight, scaled_dorefa_weight
from saliq.quant.pact import pact


def _away_from_the_kinks(n: int, alpha: float, dtype, seed: int = 0) -> torch.Tensor:
    """Activations at least 0.05 from 0 and from alpha, where the masks change: finite
    differences see the masks as constants, as the straight-through gradient does."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 0.5) * alpha * 1.5
    near = ((x.abs() < 0.05) | ((x - alpha).abs() < 0.05))
    return x.where(~near, x + 0.1).to(dtype)


@pytest.mark.parametrize("bits", (2, 4))
def test_pact_eager_double_backward(bits, monkeypatch):
    monkeypatch.setattr(fused, "pact_kernels", lambda: None)
    x = _away_from_the_kinks(40, 2.0, torch.float64).requires_grad_()
    alpha = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(lambda x, a: pact(x, a, bits), (x, alpha))


@pytest.mark.parametrize("bits", (2, 4))
def test_pact_fused_double_backward(bits):
    # the fused kernels are float32 only: finite differences in float32, with float32 steps
    assert fused.pact_kernels() is not None
    x = _away_from_the_kinks(40, 2.0, torch.float32, seed=bits).requires_grad_()
    alpha = torch.tensor(2.0, requires_grad=True)
    out = pact(x, alpha, bits)
    exact(out.detach(), pact(x.detach(), alpha.detach(), bits))  # the fused forward's values
    assert gradgradcheck(lambda x, a: pact(x, a, bits), (x, alpha), eps=1e-3, atol=2e-3,
                         rtol=1e-3, nondet_tol=1e-6)


def test_create_graph_backward_gives_the_plain_gradients_on_both_paths(monkeypatch):
    x = _away_from_the_kinks(4096, 3.0, torch.float32).requires_grad_()
    alpha = torch.tensor(3.0, requires_grad=True)
    # the upstream gradient of an inner input gradient depends on the later layers' weights
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).requires_grad_()
    for kernels in (fused.pact_kernels, lambda: None):
        monkeypatch.setattr(fused, "pact_kernels", kernels)
        plain = torch.autograd.grad(pact(x, alpha, 2), (x, alpha), upstream)
        graph = torch.autograd.grad(pact(x, alpha, 2), (x, alpha), upstream, create_graph=True)
        exact(graph[0].detach(), plain[0])
        assert graph[1].item() == pytest.approx(plain[1].item(), rel=1e-5)
        assert graph[0].requires_grad and graph[1].requires_grad  # to differentiate again


@pytest.mark.parametrize("quantize", [dorefa_weight, scaled_dorefa_weight])
@pytest.mark.parametrize("bits", (2, 4))
def test_dorefa_double_backward(quantize, bits):
    g = torch.Generator().manual_seed(bits)
    w = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    # the first derivative is, by definition, the identity-round surrogate's (a gradcheck of
    # the forward does not apply: rounding has zero derivative almost everywhere)
    assert gradgradcheck(lambda w: quantize(w, bits), (w,))


def test_dorefa_layers_closed_form_equals_its_create_graph_gradient():
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(64, 32, 3, 3, generator=g) * 0.3).requires_grad_()
    upstream = torch.randn(w.shape, generator=g)
    (plain,) = torch.autograd.grad(scaled_dorefa_weight(w, 2), w, upstream)
    (graph,) = torch.autograd.grad(scaled_dorefa_weight(w, 2), w, upstream, create_graph=True)
    torch.testing.assert_close(graph.detach(), plain, rtol=1e-5, atol=1e-6)
