"""What every trial starts from, in one place: the data, the FP reference and its saliency
maps on the probe set, and the quantized model initialised from the FP weights.

`prepare` is the set-up that `run_trial`, sensitivity and the sweep's FP-reference task share:

    setup = prepare(config)              # FP reference from the cache, or trained and cached
    setup.fp_maps                        # (P, H, W) maps of the FP model on the probe set
    setup.model                          # the plan's model, from the FP weights, calibrated
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from saliq import reference
from saliq.build import build_model, quantized_from_fp, resolve_device, trial_data
from saliq.config import TrialConfig
from saliq.data.tensors import TrialData
from saliq.saliency.attribution import attribute

__all__ = ["TrialSetup", "prepare"]


@dataclass
class TrialSetup:
    """A trial's starting point; `model` is None when `prepare(quantized=False)`."""

    config: TrialConfig
    device: torch.device
    data: TrialData
    fp_reference: reference.FPReference
    fp_model: nn.Module  # eval-ready FP model of the recipe
    fp_maps: torch.Tensor  # (P, H, W): the FP model's maps of the probe images
    black: torch.Tensor  # (1, C, 1, 1): a black pixel, normalised ("no signal")
    model: nn.Module | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # data, fp, quantize

    def maps(self, model: nn.Module, method: str | None = None) -> torch.Tensor:
        """`model`'s saliency maps of the probe images (the config's method by default)."""
        return attribute(model, self.data.probe_x, self.data.probe_y,
                         method or self.config.saliency.method, baseline=self.black)


def prepare(
    config: TrialConfig,
    device: torch.device | None = None,
    fp_reference: reference.FPReference | None = None,
    *,
    cache_dir: str | Path | None = None,
    data: TrialData | None = None,
    quantized: bool = True,
    calibrate: bool = True,
) -> TrialSetup:
    """Set up `config`'s trial on `device` (default: the config's own).

    `fp_reference` is the trained FP model of this config's recipe (a sweep trains it once and
    hands it to every trial); without it, it is read from `cache_dir` or trained and cached.
    `quantized=False` skips the quantized model; `calibrate=False` leaves its alphas as the
    config initialises them (a checkpoint is about to set them).
    """
    device = device or resolve_device(config.device)
    t0 = time.perf_counter()
    data = data or trial_data(config, device)
    t1 = time.perf_counter()
    if fp_reference is None:
        fp_reference, _ = reference.load_or_train(
            config, data, device, Path(cache_dir) if cache_dir else None)
    elif fp_reference.key != config.fp_key():
        raise ValueError(f"FP reference {fp_reference.key} is not this trial's ({config.fp_key()})")
    fp_model = build_model(config, full_precision=True).to(device)
    fp_model.load_state_dict(fp_reference.state_dict)
    setup = TrialSetup(config, device, data, fp_reference, fp_model, torch.empty(0),
                       data.black())
    setup.fp_maps = setup.maps(fp_model)
    t2 = time.perf_counter()
    if quantized:
        setup.model = quantized_from_fp(config, fp_reference.state_dict, data,
                                        calibrate=calibrate)
    setup.seconds = {"data": t1 - t0, "fp": t2 - t1, "quantize": time.perf_counter() - t2}
    return setup
