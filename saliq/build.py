"""A trial config's pieces, built: its device, its data and its models.

The one place that turns a `TrialConfig` into tensors and modules: the FP reference's
training, the trial set-up, sensitivity and the benchmarks all build through it, so the same
config always gives the same network, initialised the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from saliq.config import TrialConfig
from saliq.data import DATASETS
from saliq.data.tensors import TrialData, prepare_data
from saliq.errors import SaliqError
from saliq.models.networks import build_model as build_network
from saliq.quant.api import calibrate_alphas, load_fp_weights
from saliq.quant.plan import PrecisionPlan

__all__ = ["CALIBRATION_IMAGES", "build_model", "quantized_from_fp", "resolve_device",
           "trial_data"]

CALIBRATION_IMAGES = 1024  # training images PACT's alphas are calibrated on


def resolve_device(name: str) -> torch.device:
    """The config's device; one this process cannot use is an error a user can act on."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= (device.index or 0):
            visible = ", ".join(f"cuda:{i}" for i in range(count))
            have = f"only {visible}" if count else "no CUDA device"
            raise SaliqError(f"device: {name}, but this process sees {have}: use device: auto "
                             "(the GPU where there is one, else the CPU) or cpu")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SaliqError("device: mps, but Apple's Metal backend is not available here: use "
                         "device: auto or cpu")
    return device


def trial_data(config: TrialConfig, device: torch.device | str) -> TrialData:
    """The config's dataset, subset, imbalance and probe set, resident on `device`."""
    imbalance = config.imbalance
    return prepare_data(
        config.dataset, device, train_limit=config.limit.train, test_limit=config.limit.test,
        imbalance=(imbalance.classes, imbalance.factor) if imbalance else None,
        probe_size=config.saliency.probe_size, data_root=config.data_root)


def build_model(config: TrialConfig, *, full_precision: bool = False) -> nn.Module:
    """The config's network, quantized as its plan says (all 32-bit for the FP reference)."""
    info = DATASETS[config.dataset]
    return build_network(
        config.model.arch,
        PrecisionPlan() if full_precision else config.precision,
        in_channels=info.channels,
        image_size=info.size,
        num_classes=len(info.classes),
        dropout=config.model.dropout,
        alpha_init=config.pact.alpha_init,
        alpha_layers=config.pact.layers,
    )


def quantized_from_fp(config: TrialConfig, fp_state: dict[str, torch.Tensor], data: TrialData,
                      *, calibrate: bool = True) -> nn.Module:
    """The config's quantized model on the data's device, initialised from the FP weights:
    the global RNG seeded with the trial's seed first (so dropout draws the same masks in
    every run of the config), alphas from the config, then calibrated if it asks."""
    torch.manual_seed(config.seed)
    model = load_fp_weights(build_model(config).to(data.train_x.device), fp_state)
    if calibrate and config.qat.calibrate != "none":
        calibrate_alphas(model, data.train_x[:CALIBRATION_IMAGES], config.qat.calibrate)
    return model
