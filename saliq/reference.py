"""The full-precision reference model: trained once per recipe, cached, shared by trials.

Every trial measures saliency fidelity against the FP model of its recipe (dataset, subset,
architecture, seed, FP training settings; see `TrialConfig.fp_recipe`). Training it once and
caching it by the recipe's hash is what keeps a sweep from training it once per trial.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from saliq.atomic import write_atomic
from saliq.build import build_model
from saliq.config import TrialConfig
from saliq.data.tensors import TrialData
from saliq.training import accuracy, make_optimizer, train_epoch

__all__ = ["FPReference", "cache_path", "default_cache_dir", "load", "load_or_train", "save",
           "train_reference"]

log = logging.getLogger("saliq")


@dataclass
class FPReference:
    key: str
    recipe: dict
    state_dict: dict[str, torch.Tensor]  # on the CPU, portable between devices and nodes
    accuracy: float
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("SALIQ_CACHE_DIR", Path.home() / ".cache" / "saliq" / "fp"))


def train_reference(config: TrialConfig, data: TrialData, device: torch.device) -> FPReference:
    """Train the FP model of `config`'s recipe from its seed."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(config, full_precision=True).to(device)
    optimizer = make_optimizer(model, config.fp)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    for epoch in range(config.fp.epochs):
        loss = train_epoch(model, optimizer, data.train_x, data.train_y,
                           batch_size=config.batch_size, generator=generator,
                           num_classes=data.num_classes)
        log.info("fp epoch %d/%d: loss %.4f", epoch + 1, config.fp.epochs, loss)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return FPReference(config.fp_key(), config.fp_recipe(), state,
                       accuracy(model, data.test_x, data.test_y), time.perf_counter() - start)


def cache_path(cache_dir: Path | None, key: str) -> Path:
    return (cache_dir or default_cache_dir()) / f"fp-{key}.pt"


def save(ref: FPReference, path: Path) -> Path:
    """Write `ref` atomically: a reader sees the old file or the whole new one, never half."""
    buffer = io.BytesIO()
    torch.save(ref.to_dict(), buffer)
    return write_atomic(path, buffer.getvalue())


def load(path: Path) -> FPReference:
    return FPReference(**torch.load(path, map_location="cpu", weights_only=True))


def load_or_train(config: TrialConfig, data: TrialData, device: torch.device,
                  cache_dir: Path | None) -> tuple[FPReference, bool]:
    """(reference, trained_now): from `cache_dir/<recipe hash>.pt`, else trained and cached."""
    path = cache_path(cache_dir, config.fp_key())
    if path.is_file():
        try:
            return load(path), False
        except Exception as e:  # a truncated or foreign file: retrain rather than fail the trial
            log.warning("ignoring unreadable FP cache %s (%s)", path, e)
    ref = train_reference(config, data, device)
    save(ref, path)
    return ref, True
