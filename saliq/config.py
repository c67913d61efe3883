"""The trial config: one experiment, as data.

The YAML a user writes maps one to one onto these models; unknown keys, wrong types and
impossible values are rejected with the field path (see `parse_trial_config`). A config is
frozen: a sweep builds variants with `with_overrides`, which validates again. Pure data:
parsing and validating a config imports neither torch nor Captum (names of datasets,
architectures, layers and saliency methods come from their torch-free registries).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from saliq.data import DATASETS
from saliq.dotted import ROOT_PATH, deep_merge, set_dotted
from saliq.errors import ConfigError, format_validation_error
from saliq.models import ARCHITECTURES, layer_names
from saliq.quant.plan import PrecisionPlan, plan_label
from saliq.saliency import FIDELITY_METRICS, GRADIENT_METHODS, METHODS

__all__ = [
    "FP_RECIPE_FIELDS",
    "FidelityMetric",
    "TrialConfig",
    "load_yaml",
    "parse_trial_config",
    "stored_plan_label",
]

# The trial settings that determine the FP reference: trials that share them share one
# trained FP model (and a sweep can search them only with a choice list).
FP_RECIPE_FIELDS = ("dataset", "data_root", "limit", "imbalance", "model", "fp", "batch_size",
                    "seed")
FidelityMetric = Literal[FIDELITY_METRICS]

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Config(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Limit(_Config):
    """Subset sizes (a fixed random subset, the same for every trial); null = everything."""

    train: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    test: Annotated[int, Field(ge=1, le=10_000_000)] | None = None


class Imbalance(_Config):
    """Keep only every `factor`-th training image of the minority `classes`."""

    classes: Annotated[list[Annotated[int, Field(ge=0, le=999)]], Field(min_length=1)]
    factor: Annotated[int, Field(ge=2, le=100_000)] = 10


class ModelConfig(_Config):
    arch: str = "seed-cnn"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.25

    @field_validator("arch")
    @classmethod
    def _known(cls, arch: str) -> str:
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown model {arch!r} (use one of {', '.join(ARCHITECTURES)})")
        return arch


class PactConfig(_Config):
    """PACT's clip level: its initial value (global, or per layer) and its own L2 decay."""

    alpha_init: PositiveFloat = 10.0
    alpha_decay: NonNegativeFloat = 0.0002
    layers: dict[str, PositiveFloat] = {}


class Training(_Config):
    epochs: Annotated[int, Field(ge=0, le=10_000)]
    lr: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: NonNegativeFloat = 0.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9


class FPTraining(Training):
    """The full-precision reference: trained once per recipe and cached."""

    epochs: Annotated[int, Field(ge=0, le=10_000)] = 2
    lr: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 0.001


class SaliencyGuided(_Config):
    """Saliency-guided training (Ismail et al. 2021): mask the `fraction` least salient input
    features with random values and add `kl_weight * KL(f(x) || f(x_masked))` to the loss."""

    fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5
    kl_weight: NonNegativeFloat = 1.0


class DistillConfig(_Config):
    """Explanation distillation from the frozen FP reference (after e2KD): CE +
    `kd_weight` tau^2 KL(p_FP || p_Q) + `saliency_weight` L(S_Q, S_FP), S the normalised
    maps of `target` (the teacher's top-1 class, or the label), L `saliency_loss`; each term
    off at weight 0. `input_noise`: Gaussian noise (std, in normalised input units) added to
    every training batch, the teacher seeing it too (KD on noisy inputs approximates Jacobian
    matching, Srinivas & Fleuret 2018)."""

    kd_weight: NonNegativeFloat = 0.0
    temperature: PositiveFloat = 4.0
    saliency_weight: NonNegativeFloat = 0.0
    saliency_loss: Literal["cosine", "mse"] = "cosine"
    target: Literal["teacher_top1", "label"] = "teacher_top1"
    input_noise: NonNegativeFloat = 0.0


class QATTraining(Training):
    """Quantization-aware training, started from the FP reference's weights.

    `epochs: 0` evaluates the FP weights quantized as they are; with `calibrate` set as
    well, that is post-training quantization (PTQ): PACT's alphas are first set from the
    activations the FP model produces on training images (`max`, or the 99.9th `percentile`).
    """

    epochs: Annotated[int, Field(ge=0, le=10_000)] = 2
    lr: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 0.0005
    calibrate: Literal["none", "max", "percentile"] = "none"
    sampling: Literal["uniform", "balanced"] = "uniform"
    class_weights: Literal["none", "balanced"] = "none"
    saliency_guided: SaliencyGuided | None = None
    distill: DistillConfig | None = None
    dropout: bool = True  # false: the model's dropout off during QAT (the FP reference keeps it)


class SaliencyConfig(_Config):
    method: str = "saliency"
    # 128: spearman's 95 % interval within +-0.013 on the seed CNN at 2 bits (README: Results)
    probe_size: Annotated[int, Field(ge=1, le=10_000)] = 128
    fidelity_metric: FidelityMetric = "spearman"
    also: list[str] = []
    deletion_steps: Annotated[int, Field(ge=2, le=100)] = 10

    @field_validator("method")
    @classmethod
    def _method(cls, method: str) -> str:
        if method not in METHODS:
            raise ValueError(
                f"unknown saliency method {method!r} (use one of {', '.join(METHODS)})")
        return method

    @field_validator("also")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        for m in methods:
            cls._method(m)
        return methods


class GroupsConfig(_Config):
    """Per-class curvature (gradient norms, top Hessian eigenvalue): costs seconds, so opt-in."""

    curvature: bool = False
    max_samples: Annotated[int, Field(ge=1, le=100_000)] = 128


class ControlsConfig(_Config):
    """What makes a fidelity number readable (DESIGN.md's controls): the *ceiling*, the FP
    reference trained further with the trial's QAT settings at full precision (exactly the
    trial with a full-precision plan), and the *floor*, the FP recipe trained from the seeds
    after the trial's (`seed + 1`, ...). Each is trained once per recipe and cached."""

    ceiling: bool = True
    floor: bool = True
    floor_seeds: Annotated[int, Field(ge=0, le=16)] = 1

    @model_validator(mode="after")
    def _a_floor_needs_a_seed(self) -> ControlsConfig:
        if self.floor and self.floor_seeds < 1:
            raise ValueError(f"floor_seeds: {self.floor_seeds} with the floor on: use 1 or more "
                             "(or floor: false)")
        return self

    @property
    def any(self) -> bool:
        return self.ceiling or self.floor


class TrialConfig(_Config):
    """One experiment: data, model, precision plan, FP reference recipe, QAT, saliency."""

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    limit: Limit = Limit()
    imbalance: Imbalance | None = None
    model: ModelConfig = ModelConfig()
    precision: PrecisionPlan = PrecisionPlan()
    pact: PactConfig = PactConfig()
    fp: FPTraining = FPTraining()
    qat: QATTraining = QATTraining()
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 128
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    saliency: SaliencyConfig = SaliencyConfig()
    groups: GroupsConfig = GroupsConfig()
    controls: ControlsConfig | None = ControlsConfig()  # `controls: false` switches them off
    device: str = "auto"

    @field_validator("controls", mode="before")
    @classmethod
    def _controls_switch(cls, value: Any) -> Any:
        if value is False:
            return None
        return {} if value is True else value

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r} (use one of {', '.join(DATASETS)})")
        return name

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"arch": value} if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        ok = device in ("auto", "cpu", "cuda", "mps") or (
            device.startswith("cuda:") and device[5:].isdigit())
        if not ok:
            raise ValueError(f"{device!r} is not a device (use auto, cpu, cuda or cuda:N)")
        return device

    def layers(self) -> list[str]:
        return layer_names(self.model.arch)

    def resolved_bits(self) -> dict[str, tuple[int, int]]:
        return self.precision.resolve(self.layers())

    def plan_label(self) -> str:
        return plan_label(self.resolved_bits())

    def fp_recipe(self) -> dict[str, Any]:
        """What determines the FP reference: trials that share it share one trained model."""
        d = self.model_dump()
        return {k: d[k] for k in FP_RECIPE_FIELDS}

    def fp_key(self) -> str:
        return _key(self.fp_recipe())

    def ceiling_config(self) -> TrialConfig:
        """The ceiling control's training: this trial with a full-precision plan."""
        data = self.model_dump()
        data.update(precision=PrecisionPlan().model_dump(), controls=None)
        return TrialConfig.model_validate(data)

    def ceiling_recipe(self) -> dict[str, Any]:
        """What determines the ceiling: the FP recipe and the QAT training settings (the
        calibration of alphas that a full-precision plan does not have aside)."""
        qat = {k: v for k, v in self.qat.model_dump().items() if k != "calibrate"}
        recipe = {**self.fp_recipe(), "qat": qat}
        if self.distills_maps():  # its maps are the distillation's target
            recipe["saliency_method"] = self.saliency.method
        return recipe

    def distills_maps(self) -> bool:
        return self.qat.distill is not None and self.qat.distill.saliency_weight > 0

    def ceiling_key(self) -> str:
        return _key(self.ceiling_recipe())

    def floor_configs(self) -> list[TrialConfig]:
        """The floor control's FP recipes: this one from each of the next seeds."""
        n = self.controls.floor_seeds if self.controls and self.controls.floor else 0
        return [self.with_overrides({"seed": self.seed + k}) for k in range(1, n + 1)]

    def with_overrides(self, overrides: dict[str, Any], where: str = "trial") -> TrialConfig:
        """A copy with dotted-path values set (`{"precision.default.act_bits": 2}`), validated.

        The path `trial` is the whole config: its value, a partial trial config, is merged in
        (a variant that changes several settings at once, e.g. `{qat: {epochs: 0}}`).
        """
        data = self.model_dump()
        for path, value in overrides.items():
            if path == ROOT_PATH:
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: a variant must be a mapping of trial settings, "
                                      f"got {value!r}")
                deep_merge(data, value)
            else:
                set_dotted(data, path, value)
        return parse_trial_config(data, where)


def _key(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _check_layers(config: TrialConfig, where: str) -> None:
    names = config.layers()
    listed = ", ".join(names)
    for section, keys in (("precision.layers", config.precision.layers),
                          ("pact.layers", config.pact.layers)):
        for key in keys:
            if key not in names:
                raise ConfigError(f"{where}.{section}[{key!r}]: no layer {key!r} in "
                                  f"{config.model.arch} (layers: {listed})")
    if config.imbalance is not None:
        n = len(DATASETS[config.dataset].classes)
        bad = [c for c in config.imbalance.classes if c >= n]
        if bad:
            raise ConfigError(f"{where}.imbalance.classes: {bad[0]} is not a class of "
                              f"{config.dataset} (use 0-{n - 1})")


def _check_distill(config: TrialConfig, where: str) -> None:
    if config.distills_maps() and config.saliency.method not in GRADIENT_METHODS:
        raise ConfigError(
            f"{where}.qat.distill.saliency_weight: {config.qat.distill.saliency_weight} trains "
            f"through the student's maps, and {config.saliency.method} has no gradient path: "
            f"use saliency.method {', '.join(GRADIENT_METHODS)} (or saliency_weight: 0)")


def parse_trial_config(data: Any, where: str = "trial") -> TrialConfig:
    """Validate a mapping into a `TrialConfig`, or raise a one-line `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping of trial settings, got {type(data).__name__}")
    try:
        config = TrialConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where)) from None
    _check_layers(config, where)
    _check_distill(config, where)
    return config


# libyaml's loader when PyYAML has it: a 10,000-trial frontier file reads in seconds, not minutes
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file; a missing or malformed file is a one-line `ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    try:
        return yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{at}: {problem}") from None


def stored_plan_label(config: dict) -> str:
    """The plan label of a trial config as MLflow stores it; "?" if it no longer validates."""
    try:
        return parse_trial_config(config).plan_label()
    except ConfigError:  # an old or foreign config: tables still print
        return "?"
