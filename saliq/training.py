"""The training loop's pieces, shared by the FP reference and QAT: optimiser, epoch, predict.

`keep_freed_memory` is a process-wide allocator setting: the program's entry points (the CLI,
a sweep worker's set-up) call it once, before training allocates.
"""

from __future__ import annotations

import ctypes
import functools
import sys

import torch
import torch.nn.functional as F
from torch import nn

from saliq.config import Training
from saliq.data.batches import batch_indices
from saliq.distill import Distillation
from saliq.guided import saliency_guided_loss
from saliq.modes import eval_mode
from saliq.quant.api import alpha_parameters, weight_parameters

__all__ = ["accuracy", "class_weights", "keep_freed_memory", "make_optimizer", "predict",
           "train_epoch"]


def make_optimizer(model: nn.Module, recipe: Training, alpha_decay: float = 0.0
                   ) -> torch.optim.Optimizer:
    """Weights decay with `recipe.weight_decay`; PACT alphas have their own L2 decay."""
    groups = [{"params": weight_parameters(model), "weight_decay": recipe.weight_decay},
              {"params": alpha_parameters(model), "weight_decay": alpha_decay}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    return torch.optim.Adam(groups, lr=recipe.lr)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over the examples: a rare class's loss counts more."""
    counts = torch.bincount(labels, minlength=num_classes).float().clamp_min(1)
    w = len(labels) / (num_classes * counts)
    return w


@functools.cache
def keep_freed_memory() -> bool:
    """Stop glibc from handing each freed activation buffer back to the OS.

    Above its mmap threshold (128 KiB at first) glibc maps every allocation fresh and unmaps
    it on free, so each training step page-faults its activations back in: a fifth of a QAT
    step on a 2-core CPU. Raising the threshold to glibc's ceiling (32 MiB) and keeping up to
    1 GiB of freed memory makes steps reuse their buffers. One arena: a thread other than the
    main one (a caller that trains in a helper thread) would otherwise get its own arena,
    whose heaps shrink and fault again. Once per process, before threads start where
    possible; a no-op (False) off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    return (bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(mallopt(m_trim_threshold, 2**30))
            and bool(mallopt(m_arena_max, 1)))


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    num_classes: int,
    balanced: bool = False,
    loss_weights: torch.Tensor | None = None,
    guided: tuple[float, float] | None = None,
    distill: Distillation | None = None,
    dropout: bool = True,
) -> float:
    """One pass over (x, y); returns the mean training loss (NaN if training diverged).

    `guided = (fraction, kl_weight)` switches on saliency-guided steps, `distill` explanation
    distillation's. The loss is summed on the device and read once at the end: no
    host-device sync inside the step. `dropout=False` trains with the model's dropout off.
    """
    model.train()
    if not dropout:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.eval()
    total = torch.zeros((), device=x.device)
    seen = 0
    for idx in batch_indices(y, batch_size, generator=generator, balanced=balanced,
                             num_classes=num_classes):
        xb, yb = x[idx], y[idx]
        if distill is not None:
            loss = distill.loss(model, xb, yb, idx, generator)
        elif guided is None:
            loss = F.cross_entropy(model(xb), yb, weight=loss_weights)
        else:
            loss, _ = saliency_guided_loss(model, xb, yb, fraction=guided[0],
                                           kl_weight=guided[1], class_weights=loss_weights,
                                           generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(yb)
        seen += len(yb)
    return float(total) / max(seen, 1)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits (N, classes) in eval mode; the model's mode is restored afterwards."""
    with eval_mode(model):
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of `model` on (x, y), in eval mode."""
    return float((predict(model, x).argmax(1) == y).double().mean())
