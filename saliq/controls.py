"""The controls of a trial's recipe, trained once and cached like the FP reference.

- the *ceiling*: the FP reference trained further for the trial's QAT epochs with its QAT
  optimiser, lr, sampling and loss settings, full precision everywhere; it is the trial with a
  full-precision plan, trained by the same code (`saliq.qat.QAT`), so a full-precision trial
  and its ceiling are the same model, bit for bit;
- the *floor*: the FP reference's recipe trained from the next seeds (`seed + 1`, ...): what
  two equally good FP models agree on by chance of initialisation.

Both are `FPReference` records (full-precision models with their recipe and accuracy): the
floor's live in the FP cache (`fp-<key>.pt`: they are FP references of other seeds), the
ceiling's beside them (`ceiling-<key>.pt`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from saliq import reference
from saliq.build import build_model, quantized_from_fp
from saliq.config import TrialConfig
from saliq.data.tensors import TrialData
from saliq.qat import QAT
from saliq.reference import FPReference
from saliq.training import accuracy

__all__ = ["Controls", "ceiling_path", "load_or_train", "load_or_train_ceiling", "train_ceiling",
           "untrained_ceiling"]

log = logging.getLogger("saliq")


@dataclass
class Controls:
    """The trained control models of one trial's recipe (those its config asks for)."""

    ceiling: FPReference | None = None
    floors: list[FPReference] = field(default_factory=list)


def ceiling_path(cache_dir: Path | None, key: str) -> Path:
    return (cache_dir or reference.default_cache_dir()) / f"ceiling-{key}.pt"


def train_ceiling(config: TrialConfig, fp_reference: FPReference, data: TrialData) -> FPReference:
    """The ceiling of `config`: its QAT with a full-precision plan, from the FP weights."""
    start = time.perf_counter()
    ceiling = config.ceiling_config()
    model = quantized_from_fp(ceiling, fp_reference.state_dict, data)
    teacher = None
    if ceiling.qat.distill is not None:  # the same distillation from the FP reference
        teacher = build_model(ceiling, full_precision=True).to(data.train_x.device)
        teacher.load_state_dict(fp_reference.state_dict)
    qat = QAT(ceiling, model, data, teacher=teacher)
    for epoch in range(ceiling.qat.epochs):
        loss = qat.train_epoch(epoch)
        log.info("ceiling epoch %d/%d: loss %.4f", epoch + 1, ceiling.qat.epochs, loss)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return FPReference(config.ceiling_key(), config.ceiling_recipe(), state,
                       accuracy(model, data.test_x, data.test_y), time.perf_counter() - start)


def untrained_ceiling(config: TrialConfig, fp_reference: FPReference) -> FPReference | None:
    """With no QAT epochs the ceiling is the FP reference itself (nothing to train further)."""
    if config.qat.epochs > 0:
        return None
    return FPReference(config.ceiling_key(), config.ceiling_recipe(), fp_reference.state_dict,
                       fp_reference.accuracy, 0.0)


def load_or_train_ceiling(config: TrialConfig, fp_reference: FPReference, data: TrialData,
                          cache_dir: Path | None) -> FPReference:
    """The ceiling from the cache, else trained and cached (see `untrained_ceiling`)."""
    untrained = untrained_ceiling(config, fp_reference)
    if untrained is not None:
        return untrained
    path = ceiling_path(cache_dir, config.ceiling_key())
    if path.is_file():
        try:
            return reference.load(path)
        except Exception as e:  # a truncated or foreign file: retrain rather than fail
            log.warning("ignoring unreadable ceiling cache %s (%s)", path, e)
    log.info("ceiling %s: training (%d QAT epochs at full precision)", config.ceiling_key(),
             config.qat.epochs)
    ceiling = train_ceiling(config, fp_reference, data)
    reference.save(ceiling, path)
    return ceiling


def load_or_train(config: TrialConfig, fp_reference: FPReference, data: TrialData,
                  device: torch.device, cache_dir: Path | None) -> Controls:
    """The controls `config.controls` asks for, from the cache or trained and cached."""
    if config.controls is None:
        return Controls()
    controls = Controls()
    if config.controls.ceiling:
        controls.ceiling = load_or_train_ceiling(config, fp_reference, data, cache_dir)
    for floor in config.floor_configs():
        controls.floors.append(reference.load_or_train(floor, data, device, cache_dir)[0])
    return controls
