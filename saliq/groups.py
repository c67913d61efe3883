"""Per-class (group) metrics: who pays for quantization.

After *Explaining How Quantization Disparately Skews a Model* (arXiv 2509.07222): quantization
hurts some classes more; it shows as lower logit variance, higher loss, larger gradient norms
and larger Hessian eigenvalues for those classes. Classes are the groups here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from saliq.modes import eval_mode
from saliq.quant.api import weight_parameters

__all__ = [
    "class_gradient_norms",
    "class_hessian_top_eigenvalues",
    "group_metrics",
    "per_class_accuracy",
]


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
                       ) -> torch.Tensor:
    """Accuracy of each class (num_classes,); NaN for a class with no examples."""
    correct = torch.bincount(labels[predictions == labels], minlength=num_classes).double()
    count = torch.bincount(labels, minlength=num_classes).double()
    return torch.where(count > 0, correct / count.clamp_min(1), torch.nan)


def group_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int
                  ) -> dict[str, float]:
    """Worst-class accuracy, best-worst gap, and per class: accuracy, loss, logit variance.

    Logit variance of a class: the variance of each example's logit vector, averaged over
    the class's examples (the second paper's sign of a flattened, less confident model).
    """
    acc = per_class_accuracy(logits.argmax(1), labels, num_classes)
    present = ~acc.isnan()
    losses = F.cross_entropy(logits.double(), labels, reduction="none")
    count = torch.bincount(labels, minlength=num_classes).double().clamp_min(1)
    class_loss = torch.zeros(num_classes, dtype=torch.double, device=logits.device)
    class_loss.index_add_(0, labels, losses)
    logit_var = torch.zeros_like(class_loss)
    logit_var.index_add_(0, labels, logits.double().var(dim=1))
    out = {
        "worst_class_accuracy": float(acc[present].min()),
        "class_accuracy_gap": float(acc[present].max() - acc[present].min()),
    }
    for c in range(num_classes):
        if present[c]:
            out[f"class_accuracy_{c}"] = float(acc[c])
            out[f"class_loss_{c}"] = float(class_loss[c] / count[c])
            out[f"class_logit_var_{c}"] = float(logit_var[c] / count[c])
    return out


def _class_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                  max_samples: int):
    """(class, mean loss over its first `max_samples` examples) for each class present, in
    eval mode; the model's mode comes back afterwards."""
    with eval_mode(model):
        for c in range(num_classes):
            idx = (y == c).nonzero().flatten()[:max_samples]
            if len(idx):
                yield c, F.cross_entropy(model(x[idx]), y[idx])


def class_gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                         max_samples: int = 256) -> dict[int, float]:
    """L2 norm of the gradient of each class's mean loss with respect to the weights."""
    params = weight_parameters(model)  # PACT alphas are clip levels, not weights
    norms = {}
    for c, loss in _class_losses(model, x, y, num_classes, max_samples):
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        norms[c] = float(torch.sqrt(sum((g * g).sum() for g in grads if g is not None)))
    return norms


def class_hessian_top_eigenvalues(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    max_samples: int = 128,
    iterations: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
) -> dict[int, float]:
    """Largest-magnitude eigenvalue of the Hessian of each class's mean loss (weights only),
    by power iteration on Hessian-vector products over at most `max_samples` examples: at
    most `iterations` steps, fewer once the estimate changes by less than `tol` (relative)."""
    params = weight_parameters(model)  # PACT alphas are clip levels, not weights
    gen = torch.Generator(device="cpu").manual_seed(seed)
    eigen = {}
    for c, loss in _class_losses(model, x, y, num_classes, max_samples):
        grads = torch.autograd.grad(loss, params, create_graph=True)
        v = [torch.randn(p.shape, generator=gen).to(p.device) for p in params]
        value = 0.0
        for _ in range(iterations):
            norm = torch.sqrt(sum((t * t).sum() for t in v))
            v = [t / norm for t in v]
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
            previous = value
            value = float(sum((h * t).sum() for h, t in zip(hv, v, strict=True)))
            v = [h.detach() for h in hv]
            # Convergence is slow when the top two eigenvalues are close in magnitude (20
            # fixed steps can be 10 % off): run until the estimate settles.
            if abs(value - previous) <= tol * abs(value):
                break
        eigen[c] = value
    return eigen
