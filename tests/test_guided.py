"""Saliency-guided training: the masking and the loss."""

from __future__ import annotations

import pytest
import torch

from saliq.guided import mask_least_salient, saliency_guided_loss
from saliq.models.networks import build_model
from saliq.quant.plan import PrecisionPlan


@pytest.mark.parametrize("fraction", [0.1, 0.37, 0.5, 0.9])
def test_mask_replaces_exactly_the_least_salient_features(fraction):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 7, 7, generator=g)
    saliency = torch.rand(5, 2, 7, 7, generator=g)  # distinct values: no ties
    d = x[0].numel()
    k = round(fraction * d)
    out = mask_least_salient(x, saliency, fraction, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    changed = (out != x).flatten(1)
    lowest = saliency.flatten(1).argsort(dim=1)[:, :k]
    expected = torch.zeros_like(changed).scatter_(1, lowest, True)
    assert torch.equal(changed, expected)
    assert (changed.sum(1) == k).all()
    replaced = out.flatten(1)[changed]
    assert replaced.min() >= x.min() and replaced.max() <= x.max()
    # the input is not modified, and the same generator gives the same mask
    again = mask_least_salient(x, saliency, fraction, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_mask_of_nothing_is_a_copy():
    x = torch.randn(2, 1, 4, 4)
    out = mask_least_salient(x, torch.rand(2, 1, 4, 4), 0.01)
    assert torch.equal(out, x) and out is not x


def test_saliency_guided_loss_is_finite_and_trains_the_weights():
    torch.manual_seed(0)
    model = build_model("seed-cnn", PrecisionPlan.uniform(4))
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    loss, logits = saliency_guided_loss(model, x, y, fraction=0.5, kl_weight=1.0,
                                        generator=torch.Generator().manual_seed(0))
    assert logits.shape == (8, 10) and loss.ndim == 0 and torch.isfinite(loss)
    assert not x.requires_grad
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.conv1.weight.grad.abs().sum() > 0 and model.fc2.weight.grad.abs().sum() > 0

    model.eval()  # no dropout: the same logits in every call
    plain = torch.nn.functional.cross_entropy(model(x), y)
    no_kl, _ = saliency_guided_loss(model, x, y, fraction=0.5, kl_weight=0.0)
    with_kl, _ = saliency_guided_loss(model, x, y, fraction=0.5, kl_weight=1.0)
    assert no_kl.item() == pytest.approx(plain.item(), rel=1e-6)
    assert with_kl.item() > plain.item()  # the KL term is positive once masking changes f(x)
