"""Per-class metrics: accuracies that add up, and curvature against a dense Hessian."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from saliq.groups import (
    class_gradient_norms,
    class_hessian_top_eigenvalues,
    group_metrics,
    per_class_accuracy,
)
from saliq.quant.layers import PACT


def _logits_and_labels(seed=0, n=500, classes=10):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g)
    logits[torch.arange(n), labels] += torch.rand(n, generator=g) * 3  # mostly right
    return logits, labels


@pytest.mark.parametrize("seed", range(3))
def test_per_class_accuracies_average_to_the_overall_accuracy(seed):
    logits, labels = _logits_and_labels(seed)
    acc = per_class_accuracy(logits.argmax(1), labels, 10)
    weights = torch.bincount(labels, minlength=10).double() / len(labels)
    overall = (logits.argmax(1) == labels).double().mean()
    assert float((acc * weights).sum()) == pytest.approx(float(overall), abs=1e-12)

    m = group_metrics(logits, labels, 10)
    best = max(m[f"class_accuracy_{c}"] for c in range(10))
    assert m["worst_class_accuracy"] <= float(overall) <= best
    assert m["class_accuracy_gap"] == best - m["worst_class_accuracy"]
    assert m["worst_class_accuracy"] == min(m[f"class_accuracy_{c}"] for c in range(10))
    for c in range(10):
        mask = labels == c
        assert m[f"class_loss_{c}"] == pytest.approx(
            float(F.cross_entropy(logits[mask].double(), labels[mask])), rel=1e-12)
        assert m[f"class_logit_var_{c}"] == pytest.approx(
            float(logits[mask].double().var(dim=1).mean()), rel=1e-12)


def test_a_class_without_examples_is_left_out():
    logits, labels = _logits_and_labels(n=200)
    keep = labels != 3
    acc = per_class_accuracy(logits[keep].argmax(1), labels[keep], 10)
    assert math.isnan(acc[3]) and not acc[torch.arange(10) != 3].isnan().any()
    m = group_metrics(logits[keep], labels[keep], 10)
    assert "class_accuracy_3" not in m and "class_accuracy_2" in m
    assert not math.isnan(m["worst_class_accuracy"])


def _tiny_mlp():
    torch.manual_seed(0)
    # 4*6+6 + 6*3+3 = 51 weights, plus a PACT alpha that is not a weight
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3), PACT(32, 5.0)).double()


def _dense_top_eigenvalues(model, x, y, classes):
    params = {n: p.detach() for n, p in model.named_parameters() if not n.endswith("alpha")}
    names, shapes = list(params), [p.shape for p in params.values()]
    flat = torch.cat([p.flatten() for p in params.values()])

    def loss(vector, xc, yc):
        split = dict(zip(names, (chunk.view(s) for chunk, s in zip(
            vector.split([s.numel() for s in shapes]), shapes, strict=True)), strict=True))
        return F.cross_entropy(functional_call(model, split, (xc,), strict=False), yc)

    tops = {}
    for c in range(classes):
        xc, yc = x[y == c], y[y == c]
        hessian = torch.autograd.functional.hessian(lambda v, xc=xc, yc=yc: loss(v, xc, yc), flat)
        eigenvalues = torch.linalg.eigvalsh(hessian)
        tops[c] = float(eigenvalues[eigenvalues.abs().argmax()])
    return tops, flat.numel()


def test_hessian_top_eigenvalue_matches_a_dense_eigendecomposition():
    model = _tiny_mlp()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 4, generator=g, dtype=torch.double)
    y = torch.randint(0, 3, (60,), generator=g)
    dense, n_weights = _dense_top_eigenvalues(model, x, y, 3)
    assert n_weights == 51
    model.train()
    estimate = class_hessian_top_eigenvalues(model, x, y, 3)
    assert model.training  # mode restored
    for c in range(3):
        assert estimate[c] == pytest.approx(dense[c], rel=0.03)


def test_gradient_norms_are_positive_and_finite():
    model = _tiny_mlp()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 4, generator=g, dtype=torch.double)
    y = torch.randint(0, 3, (40,), generator=g)
    norms = class_gradient_norms(model, x, y, 3)
    assert set(norms) == {0, 1, 2}
    assert all(0 < v < math.inf for v in norms.values())
    # the norm of the gradient of the class's mean loss over the weights (alpha excluded)
    xc, yc = x[y == 1], y[y == 1]
    weights = [p for n, p in model.named_parameters() if not n.endswith("alpha")]
    grads = torch.autograd.grad(F.cross_entropy(model(xc), yc), weights)
    assert norms[1] == pytest.approx(float(torch.sqrt(sum((gr * gr).sum() for gr in grads))),
                                     rel=1e-12)
    assert all(p.grad is None for p in model.parameters())
    assert 2 not in class_gradient_norms(model, x[y != 2], y[y != 2], 3)
