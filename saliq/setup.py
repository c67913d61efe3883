"""What every trial starts from, in one place: the data, the FP reference and its saliency
maps on the probe set, the controls' maps, and the quantized model initialised from the FP
weights.

`prepare` is the set-up that `run_trial`, sensitivity and the sweep's FP-reference task share:

    setup = prepare(config)              # FP reference from the cache, or trained and cached
    setup.fp_maps                        # (P, H, W) maps of the FP model on the probe set
    setup.model                          # the plan's model, from the FP weights, calibrated
    setup.ceiling_maps, setup.floor_maps # the controls' maps (those the config asks for)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from saliq import controls as control_models
from saliq import reference
from saliq.build import build_model, quantized_from_fp, resolve_device, trial_data
from saliq.config import TrialConfig
from saliq.controls import Controls
from saliq.data.tensors import TrialData
from saliq.saliency.attribution import attribute
from saliq.saliency.similarity import per_image

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
    controls: Controls = field(default_factory=Controls)
    ceiling_maps: torch.Tensor | None = None  # (P, H, W)
    floor_maps: list[torch.Tensor] = field(default_factory=list)  # one (P, H, W) per seed
    seconds: dict[str, float] = field(default_factory=dict)  # data, fp, controls, quantize

    def maps(self, model: nn.Module, method: str | None = None) -> torch.Tensor:
        """`model`'s saliency maps of the probe images (the config's method by default), on a
        forked RNG: attributions that draw noise never change what training draws next."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return attribute(model, self.data.probe_x, self.data.probe_y,
                             method or self.config.saliency.method, baseline=self.black)

    def fp_like(self, state_dict: dict[str, torch.Tensor]) -> nn.Module:
        """A full-precision model of the recipe holding `state_dict` (a control's weights)."""
        return _fp_model(self.config, state_dict, self.device)

    def control_agreement(self) -> dict[str, dict[str, torch.Tensor] | None]:
        """Per-image agreement of each control's maps with the FP maps: `ceiling` and `floor`
        (the mean over the floor's seeds), None for a control the config does not ask for."""
        floor = None
        if self.floor_maps:
            each = [per_image(maps, self.fp_maps) for maps in self.floor_maps]
            floor = {m: torch.stack([e[m] for e in each]).mean(0) for m in each[0]}
        ceiling = None if self.ceiling_maps is None else per_image(self.ceiling_maps, self.fp_maps)
        return {"ceiling": ceiling, "floor": floor}


def _fp_model(config: TrialConfig, state_dict: dict[str, torch.Tensor],
              device: torch.device) -> nn.Module:
    model = build_model(config, full_precision=True).to(device)
    model.load_state_dict(state_dict)
    return model


def prepare(
    config: TrialConfig,
    device: torch.device | None = None,
    fp_reference: reference.FPReference | None = None,
    *,
    cache_dir: str | Path | None = None,
    data: TrialData | None = None,
    controls: Controls | None = None,
    quantized: bool = True,
    calibrate: bool = True,
) -> TrialSetup:
    """Set up `config`'s trial on `device` (default: the config's own).

    `fp_reference` is the trained FP model of this config's recipe, and `controls` its
    trained controls (a sweep trains both once and hands them to every trial); without them,
    they are read from `cache_dir` or trained and cached, as far as the config asks for them.
    `quantized=False` skips the quantized model and the controls; `calibrate=False` leaves
    its alphas as the config initialises them (a checkpoint is about to set them).
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
    fp_model = _fp_model(config, fp_reference.state_dict, device)
    setup = TrialSetup(config, device, data, fp_reference, fp_model, torch.empty(0),
                       data.black())
    setup.fp_maps = setup.maps(fp_model)
    t2 = time.perf_counter()
    if quantized and config.controls is not None:
        setup.controls = controls or control_models.load_or_train(
            config, fp_reference, data, device, Path(cache_dir) if cache_dir else None)
        if setup.controls.ceiling is not None:
            setup.ceiling_maps = setup.maps(setup.fp_like(setup.controls.ceiling.state_dict))
        setup.floor_maps = [setup.maps(setup.fp_like(f.state_dict))
                            for f in setup.controls.floors]
    t3 = time.perf_counter()
    if quantized:
        setup.model = quantized_from_fp(config, fp_reference.state_dict, data,
                                        calibrate=calibrate)
    setup.seconds = {"data": t1 - t0, "fp": t2 - t1, "controls": t3 - t2,
                     "quantize": time.perf_counter() - t3}
    return setup
