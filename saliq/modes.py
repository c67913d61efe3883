"""A model's train/eval mode and `requires_grad` flags, changed for a while and given back.

Evaluation, calibration, attribution and cost counting need `eval()` (dropout off, batch
norm frozen); the caller's model must come back as it was, even after an exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode", "inspection_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model.eval()` for the duration; its train/eval mode comes back after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def inspection_mode(model: nn.Module) -> Iterator[nn.Module]:
    """eval() and frozen parameters for the duration (gradients flow to the input only);
    the caller's mode and `requires_grad` flags come back after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model):
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield model
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
