"""Quantization-aware training of a model from its FP start, one epoch at a time.

The loop every QAT-like phase shares: a trial's QAT, and the ceiling control (the same
training with a full-precision plan), which is why it lives apart from the trial. Its state
(model, optimiser, both RNGs) is a plain dict that continues it exactly.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from saliq.config import TrialConfig
from saliq.data.tensors import TrialData
from saliq.distill import Distillation, Teacher
from saliq.errors import TrialDiverged
from saliq.training import class_weights, make_optimizer, train_epoch

__all__ = ["QAT"]

log = logging.getLogger("saliq")


class QAT:
    """The QAT phase of `config` on `model` (already initialised from the FP weights): the
    optimiser, the batch order's generator (seeded `seed + 1`) and the loss settings."""

    def __init__(self, config: TrialConfig, model: nn.Module, data: TrialData,
                 state: dict | None = None, teacher: nn.Module | None = None) -> None:
        """`teacher`: the frozen FP reference, which `qat.distill` distils from."""
        self.config, self.model, self.data = config, model, data
        self.optimizer = make_optimizer(model, config.qat, config.pact.alpha_decay)
        device = data.train_x.device
        self.generator = torch.Generator(device=device).manual_seed(config.seed + 1)
        if state is not None:
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            self.generator.set_state(state["generator"].to(self.generator.get_state().device))
        self.loss_weights = (class_weights(data.train_y, data.num_classes)
                             if config.qat.class_weights == "balanced" else None)
        sg = config.qat.saliency_guided
        self.guided = (sg.fraction, sg.kl_weight) if sg is not None and sg.kl_weight > 0 else None
        self.distill = None
        if config.qat.distill is not None:
            if teacher is None:
                raise ValueError("qat.distill needs the FP reference as its teacher")
            self.distill = _distillation(config, teacher, data, self.loss_weights)

    def train_epoch(self, epoch: int) -> float:
        """Train epoch `epoch` (0-based); its mean loss. `TrialDiverged` if it is not finite."""
        config, data = self.config, self.data
        loss = train_epoch(self.model, self.optimizer, data.train_x, data.train_y,
                           batch_size=config.batch_size, generator=self.generator,
                           num_classes=data.num_classes,
                           balanced=config.qat.sampling == "balanced",
                           loss_weights=self.loss_weights, guided=self.guided,
                           distill=self.distill, dropout=config.qat.dropout)
        if not math.isfinite(loss):
            raise TrialDiverged(f"QAT loss became {loss} in epoch {epoch + 1} (plan "
                                f"{config.plan_label()}, lr {config.qat.lr}): lower qat.lr")
        return loss

    def state(self) -> dict:
        """Model, optimiser and RNG states: what `QAT(..., state=...)` continues from."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": torch.get_rng_state(), "generator": self.generator.get_state()}


def _distillation(config: TrialConfig, teacher: nn.Module, data: TrialData,
                  class_weights: torch.Tensor | None) -> Distillation:
    """`config.qat.distill` on `data`'s training images: without input noise the teacher's
    logits and maps are computed once here, for every training image."""
    d = config.qat.distill
    step = Distillation(Teacher(teacher, config.saliency.method, d.target, data.black()),
                        d.kd_weight, d.temperature, d.saliency_weight, d.saliency_loss,
                        d.input_noise, class_weights)
    if d.input_noise == 0:
        step.teacher.precompute(data.train_x, data.train_y, with_maps=config.distills_maps())
    return step
