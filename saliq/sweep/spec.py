"""The sweep spec: a base trial config, a search space over dotted paths into it, an
objective, a sampler, a budget, resources, storage and where to track.

`load_sweep(path)` validates everything before anything starts and raises a one-line
`ConfigError` naming the field path: `sweep.search['precision.default.act_bits']: 64 is
not a bit-width (use 1-8 or 32)`.
"""

from __future__ import annotations

import itertools
import math
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from saliq.config import (
    FP_RECIPE_FIELDS,
    FidelityMetric,
    TrialConfig,
    load_yaml,
    parse_trial_config,
)
from saliq.dotted import ROOT_PATH, get_dotted, split
from saliq.errors import ConfigError, format_validation_error
from saliq.saliency import FIDELITY_METRICS

__all__ = [
    "METRICS",
    "Choice",
    "Dimension",
    "IntRange",
    "LogUniform",
    "Sweep",
    "SweepSpec",
    "Uniform",
    "load_sweep",
    "parse_sweep",
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Final metrics a sweep can optimise (DESIGN.md's shared names and the cost/faithfulness ones).
METRICS = (
    "accuracy", "fidelity", *(f"fidelity_{m}" for m in FIDELITY_METRICS),
    "fidelity_retained", *(f"fidelity_retained_{m}" for m in FIDELITY_METRICS), "accuracy_drop",
    "worst_class_accuracy", "class_accuracy_gap", "model_bits", "bitops", "deletion_auc",
)
# ...and which controls each of them needs (ceiling, floor)
NEEDS_CONTROLS = {"accuracy_drop": ("ceiling",),
                  **{m: ("ceiling", "floor") for m in METRICS if m.startswith("fidelity_retained")}}


def _name(value: str) -> str:
    if not NAME_PATTERN.match(value) or ".." in value:
        raise ValueError(f"{value!r} is not a usable name (letters, digits, '_', '-', '.', at most "
                         "64, starting with a letter or digit)")
    return value


class _Spec(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# ---- search dimensions -----------------------------------------------------------------
# Each kind is a model of one key ({choice: [...]}, {uniform: [low, high]}, ...); a pydantic
# union discriminated by that key validates them, and the models are the dimensions the search
# space is built from (Optuna distributions, decoding sampled values, enqueued points).

_SCALARS = (bool, int, float, str, type(None))


def _bounds(raw: Any) -> list[float]:
    ok = (isinstance(raw, list) and len(raw) == 2
          and all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
          and all(math.isfinite(v) for v in raw))
    if not ok:
        raise ValueError("give [low, high], two finite numbers")
    if not raw[0] < raw[1]:
        raise ValueError(f"low {raw[0]} must be below high {raw[1]}")
    return list(raw)


class Choice(_Spec):
    """A categorical dimension: a list of options, or a mapping of named options. Complex
    values (a whole precision plan) are searched by label: the mapping's keys, or the list
    position."""

    choice: Any

    @field_validator("choice", mode="before")
    @classmethod
    def _options(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw:
            if not all(isinstance(k, str) for k in raw):
                raise ValueError("option names must be strings")
            return raw
        if not isinstance(raw, list) or not raw:
            raise ValueError("give a non-empty list (or a mapping of named options)")
        if all(isinstance(v, _SCALARS) for v in raw) and len({(type(v), v) for v in raw}) != len(
                raw):
            raise ValueError("options repeat")
        return raw

    @property
    def values(self) -> tuple[Any, ...]:
        return tuple(self.choice.values() if isinstance(self.choice, dict) else self.choice)

    @property
    def labels(self) -> tuple[str, ...] | None:
        """What the search samples in place of complex values; None: the values themselves."""
        if isinstance(self.choice, dict):
            return tuple(self.choice)
        if all(isinstance(v, _SCALARS) for v in self.choice):
            return None
        return tuple(str(i) for i in range(len(self.choice)))

    def options(self) -> list[Any]:
        return list(self.labels if self.labels is not None else self.values)

    def decode(self, sampled: Any) -> Any:
        labels = self.labels
        return self.values[labels.index(sampled)] if labels is not None else sampled

    def encode(self, value: Any) -> Any:
        """The searched option of a value (for enqueued points); KeyError if not an option."""
        labels = self.labels
        if labels is not None:
            if value in labels:
                return value
            for label, v in zip(labels, self.values, strict=True):
                if v == value:
                    return label
        elif value in self.values:
            return value
        raise KeyError(value)


class _Interval(_Spec):
    log: ClassVar[bool] = False

    @property
    def low(self) -> float:
        return float(self._pair()[0])

    @property
    def high(self) -> float:
        return float(self._pair()[1])

    def decode(self, sampled: Any) -> Any:
        return float(sampled)

    def encode(self, value: Any) -> Any:
        if not isinstance(value, int | float) or not self.low <= value <= self.high:
            raise KeyError(value)
        return float(value)


class Uniform(_Interval):
    uniform: list[Any]

    @field_validator("uniform", mode="before")
    @classmethod
    def _interval(cls, raw: Any) -> list[float]:
        return _bounds(raw)

    def _pair(self) -> list[Any]:
        return self.uniform


class LogUniform(_Interval):
    loguniform: list[Any]
    log: ClassVar[bool] = True

    @field_validator("loguniform", mode="before")
    @classmethod
    def _positive(cls, raw: Any) -> list[float]:
        low, high = _bounds(raw)
        if low <= 0:
            raise ValueError(f"low {low} must be positive")
        return [low, high]

    def _pair(self) -> list[Any]:
        return self.loguniform


class IntRange(_Spec):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, serialize_by_alias=True)

    bounds: list[int] = Field(alias="int")

    @field_validator("bounds", mode="before")
    @classmethod
    def _integers(cls, raw: Any) -> list[int]:
        low, high = _bounds(raw)
        if not all(isinstance(v, int) for v in (low, high)):
            raise ValueError("bounds must be integers")
        return [low, high]

    @property
    def low(self) -> int:
        return self.bounds[0]

    @property
    def high(self) -> int:
        return self.bounds[1]

    def decode(self, sampled: Any) -> Any:
        return int(sampled)

    def encode(self, value: Any) -> Any:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if not is_int or not self.low <= value <= self.high:
            raise KeyError(value)
        return value


_KINDS = ("choice", "uniform", "loguniform", "int")


def _kind(raw: Any) -> str | None:
    if isinstance(raw, BaseModel):  # already validated (a spec re-validated from a dump)
        raw = raw.model_dump(by_alias=True)
    if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) in _KINDS:
        return f"<{next(iter(raw))}>"  # <...>: the error formatter leaves tags out of paths
    return None


Dimension = Annotated[
    Annotated[Choice, Tag("<choice>")] | Annotated[Uniform, Tag("<uniform>")]
    | Annotated[LogUniform, Tag("<loguniform>")] | Annotated[IntRange, Tag("<int>")],
    Discriminator(_kind, custom_error_type="dimension",
                  custom_error_message="write one of {choice: [...]}, {uniform: [low, high]}, "
                                       "{loguniform: [low, high]} or {int: [low, high]}"),
]


class ObjectiveSpec(_Spec):
    """`weighted`: maximise sum(weight * metric); `pareto`: each metric with its direction."""

    weighted: dict[str, Annotated[float, Field(allow_inf_nan=False)]] | None = None
    pareto: dict[str, Literal["max", "min"]] | None = None
    fidelity_metric: FidelityMetric = "spearman"  # the trial's saliency.fidelity_metric

    @model_validator(mode="after")
    def _one_mode(self) -> ObjectiveSpec:
        if (self.weighted is None) == (self.pareto is None):
            raise ValueError("give exactly one of weighted: {metric: weight} or "
                             "pareto: {metric: max|min}")
        metrics = self.weighted or self.pareto
        if not metrics:
            raise ValueError("name at least one metric")
        for m in metrics:
            if m not in METRICS:
                raise ValueError(f"unknown metric {m!r} (use {', '.join(METRICS)})")
        return self

    @property
    def metrics(self) -> list[str]:
        return list(self.weighted or self.pareto)

    def directions(self) -> list[tuple[str, str]]:
        """The objectives the frontier is computed over."""
        if self.pareto:
            return list(self.pareto.items())
        return [(m, "max" if w >= 0 else "min") for m, w in self.weighted.items()]

    def value(self, metrics: dict[str, float]) -> float | None:
        """The weighted objective of `metrics`, or None in pareto mode."""
        if self.weighted is None:
            return None
        return sum(w * metrics[m] for m, w in self.weighted.items())


class SamplerSpec(_Spec):
    type: Literal["tpe", "nsga2", "random", "grid"] = "tpe"
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = 0


class BudgetSpec(_Spec):
    num_samples: Annotated[int, Field(ge=1, le=100_000)] = 8
    max_concurrent: Annotated[int, Field(ge=1, le=4096)] = 2
    max_failures: Annotated[int, Field(ge=0, le=100)] = 2


class SchedulerSpec(_Spec):
    """ASHA early stopping on the weighted objective, per QAT epoch."""

    type: Literal["asha"] = "asha"
    grace_period: Annotated[int, Field(ge=1, le=10_000)] = 1
    reduction_factor: Annotated[float, Field(gt=1, le=100)] = 2.0


class ResourcesSpec(_Spec):
    cpu: Annotated[float, Field(gt=0, le=1024)] = 1.0
    gpu: Annotated[float, Field(ge=0, le=64)] = 0.0

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        # Ray's rule: a fraction of one GPU shares it; more than one GPU is a whole number
        if value > 1 and not value.is_integer():
            raise ValueError(f"{value:g} GPUs per trial: above 1 a GPU count must be whole "
                             "(a fraction shares one GPU, e.g. 0.25)")
        return value

    def describe(self) -> str:
        return f"{self.cpu:g} CPU and {self.gpu:g} GPU"


class MlflowSpec(_Spec):
    tracking_uri: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    experiment: str | None = None

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: str | None) -> str | None:
        return None if value is None else _name(value)


# SQLAlchemy's database URLs that Optuna's RDBStorage takes ("dialect" or "dialect+driver")
STUDY_SCHEMES = re.compile(r"^(sqlite|postgresql|mysql|mariadb|oracle|mssql)(\+\w+)?$")


class OptunaSpec(_Spec):
    """Where the sweep's Optuna study lives: a database URL (PostgreSQL on a cluster), or
    null for a journal file beside the sweep."""

    storage: Annotated[str, Field(min_length=1, max_length=2048)] | None = None

    @field_validator("storage")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urllib.parse.urlsplit(value)
        if not STUDY_SCHEMES.match(parts.scheme):
            raise ValueError(f"{value!r} is not a database URL: use postgresql://USER@HOST/DB, "
                             "sqlite:////PATH/study.db (or leave storage out: a journal file "
                             "beside the sweep)")
        if parts.password is not None:
            raise ValueError("the URL holds a password, which would be stored with the spec "
                             "and logged to MLflow: leave it out and give it to the driver "
                             "(PGPASSWORD or ~/.pgpass for PostgreSQL)")
        return value


class SweepSpec(_Spec):
    name: str
    trial: dict[str, Any] = {}
    search: dict[str, Dimension] = {}
    objective: ObjectiveSpec = ObjectiveSpec(weighted={"accuracy": 0.5, "fidelity": 0.5})
    sampler: SamplerSpec = SamplerSpec()
    budget: BudgetSpec = BudgetSpec()
    scheduler: SchedulerSpec | None = None
    resources: ResourcesSpec = ResourcesSpec()
    storage: Annotated[str, Field(min_length=1, max_length=4096)] = "./saliq-runs"
    mlflow: MlflowSpec = MlflowSpec()
    optuna: OptunaSpec = OptunaSpec()
    enqueue: list[dict[str, Any]] = []

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name(value)

    @property
    def experiment(self) -> str:
        return self.mlflow.experiment or self.name


def _check_values(dim: Dimension) -> list[Any]:
    if isinstance(dim, Choice):
        return list(dim.values)
    return [dim.low, dim.high]


def _touches_fp_recipe(path: str) -> bool:
    # the root path `trial` (whole variants) may change anything, the FP recipe included
    return split(path)[0] in (*FP_RECIPE_FIELDS, ROOT_PATH)


def _touches_ceiling(path: str) -> bool:
    """The ceiling is the FP recipe trained further with the QAT settings (calibration aside)."""
    parts = split(path)
    return _touches_fp_recipe(path) or (parts[0] == "qat" and parts[1:2] != ["calibrate"])


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: its spec, its base trial config and its search dimensions."""

    spec: SweepSpec
    base: TrialConfig
    dims: dict[str, Dimension]

    @property
    def name(self) -> str:
        return self.spec.name

    def as_written(self) -> dict[str, Any]:
        """The spec as plain data holding only what its author set (defaults left to the
        schema): what `spec.yaml` stores and `parse_sweep` reads back to the same sweep."""
        return self.spec.model_dump(mode="json", exclude_unset=True)

    def trial_config(self, sampled: dict[str, Any]) -> TrialConfig:
        """The trial config of one sampled point (search-space options -> values)."""
        overrides = {path: dim.decode(sampled[path]) for path, dim in self.dims.items()}
        return self.base.with_overrides(overrides)

    def recipe_variants(self) -> list[TrialConfig]:
        """One config per combination of the searched FP-recipe options (the FP references the
        sweep needs), in a stable order."""
        recipe_dims = {p: d for p, d in self.dims.items() if _touches_fp_recipe(p)}
        variants = {}
        for combo in itertools.product(*(d.values for d in recipe_dims.values())):
            variant = self.base.with_overrides(dict(zip(recipe_dims, combo, strict=True)))
            variants.setdefault((variant.fp_key(), variant.model_dump_json()), variant)
        return list(variants.values())

    def reference_configs(self) -> list[TrialConfig]:
        """One config per FP reference the sweep needs: each recipe variant's, and its floor
        control's (the next seeds'), each recipe once."""
        configs: dict[str, TrialConfig] = {}
        for variant in self.recipe_variants():
            for config in (variant, *variant.floor_configs()):
                configs.setdefault(config.fp_key(), config)
        return list(configs.values())

    def continuous_ceiling_dims(self) -> list[str]:
        """Searched settings of the ceiling's recipe that no list enumerates (a learning rate on
        a log scale): each ceiling is trained at the base config's value of them."""
        return [p for p, d in self.dims.items()
                if _touches_ceiling(p) and not isinstance(d, Choice)]

    def ceiling_config(self, config: TrialConfig) -> TrialConfig:
        """The config whose ceiling `config`'s trial is read against: itself, with the
        continuously searched settings of the ceiling's recipe at the base config's values."""
        base = self.base.model_dump()
        kept = {p: get_dotted(base, p) for p in self.continuous_ceiling_dims()}
        return config.with_overrides(kept) if kept else config

    def ceiling_configs(self) -> list[TrialConfig]:
        """One config per ceiling the sweep needs (every combination of the searched choices
        that change the ceiling's recipe), each recipe once; none where the controls are off."""
        dims = {p: d for p, d in self.dims.items() if _touches_ceiling(p) and isinstance(d, Choice)}
        configs: dict[str, TrialConfig] = {}
        for combo in itertools.product(*(d.values for d in dims.values())):
            variant = self.base.with_overrides(dict(zip(dims, combo, strict=True)))
            if variant.controls is not None and variant.controls.ceiling:
                configs.setdefault(variant.ceiling_key(), variant)
        return list(configs.values())

    def enqueued_points(self) -> list[dict[str, Any]]:
        return [{p: self.dims[p].encode(v) for p, v in point.items()}
                for point in self.spec.enqueue]

    def grid_size(self) -> int:
        return math.prod(len(d.values) for d in self.dims.values() if isinstance(d, Choice))


def _reason(err: ConfigError, value: Any) -> str:
    # parse_trial_config says "<path>: <reason>"; the sweep names its own path instead.
    reason = str(err).split(": ", 1)[-1]
    if reason.startswith("unknown key"):
        return "no such setting in a trial config (see the README's trial config)"
    return reason if repr(value) in reason or "layer" in reason else f"{value!r}: {reason}"


def parse_sweep(data: Any, where: str = "sweep") -> Sweep:
    """Validate a sweep spec mapping: every error names its field path, in one line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with name, trial, search, objective, ...")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where)) from None
    base = parse_trial_config(_with_fidelity_metric(spec, where), f"{where}.trial")
    dims = dict(spec.search)
    for path, dim in dims.items():
        if _touches_fp_recipe(path) and not isinstance(dim, Choice):
            raise ConfigError(f"{where}.search[{path!r}]: the FP reference is trained once per "
                              "recipe before the trials, so this setting can only be searched "
                              "with a choice list")
    sweep = Sweep(spec, base, dims)
    for variant in sweep.recipe_variants():
        for path, dim in dims.items():
            for value in _check_values(dim):
                try:
                    variant.with_overrides({path: value})
                except ConfigError as e:
                    raise ConfigError(f"{where}.search[{path!r}]: {_reason(e, value)}") from None
    _check_plan(sweep, where)
    return sweep


def _with_fidelity_metric(spec: SweepSpec, where: str) -> dict[str, Any]:
    """The base trial config with the fidelity metric named once: `objective.fidelity_metric`
    or `trial.saliency.fidelity_metric`, whichever is given; both, disagreeing, is an error."""
    trial = dict(spec.trial)
    saliency = trial.get("saliency", {})
    if "fidelity_metric" not in spec.objective.model_fields_set or not isinstance(saliency, dict):
        return trial
    named = spec.objective.fidelity_metric
    if saliency.get("fidelity_metric", named) != named:
        raise ConfigError(f"{where}.objective.fidelity_metric: {named!r}, but "
                          f"{where}.trial.saliency.fidelity_metric is "
                          f"{saliency['fidelity_metric']!r}: name the fidelity metric in one "
                          "place")
    trial["saliency"] = {**saliency, "fidelity_metric": named}
    return trial


def _check_plan(sweep: Sweep, where: str) -> None:
    spec = sweep.spec
    controls = sweep.base.controls
    for metric in spec.objective.metrics:
        missing = [c for c in NEEDS_CONTROLS.get(metric, ())
                   if controls is None or not getattr(controls, c)]
        if missing:
            raise ConfigError(f"{where}.objective: {metric} needs the {' and the '.join(missing)} "
                              f"control: set trial.controls.{missing[0]}: true (or optimise a "
                              "metric without controls)")
    if spec.scheduler is not None and spec.objective.weighted is None:
        raise ConfigError(f"{where}.scheduler: ASHA stops trials on one number; use a weighted "
                          "objective, or drop the scheduler for a pareto objective")
    if spec.sampler.type == "grid":
        if not sweep.dims or not all(isinstance(d, Choice) for d in sweep.dims.values()):
            raise ConfigError(f"{where}.sampler: a grid needs every search dimension to be a "
                              "choice list")
        if spec.budget.num_samples > sweep.grid_size():
            raise ConfigError(f"{where}.budget.num_samples: {spec.budget.num_samples} is more "
                              f"than the grid's {sweep.grid_size()} points")
    devices = {sweep.base.device, *getattr(sweep.dims.get("device"), "values", ())}
    cuda = sorted(d for d in devices if str(d).startswith("cuda"))
    if cuda and spec.resources.gpu == 0:
        raise ConfigError(f"{where}.trial.device: {cuda[0]} needs resources.gpu > 0 (Ray hides "
                          "the GPUs from trials that ask for none): set resources.gpu, or use "
                          "device: auto")
    if not sweep.dims and spec.budget.num_samples > 1:
        raise ConfigError(f"{where}.search: empty, so every trial would be the same; add a "
                          "dimension or set budget.num_samples to 1")
    for i, point in enumerate(spec.enqueue):
        for path, value in point.items():
            if path not in sweep.dims:
                raise ConfigError(f"{where}.enqueue[{i}][{path!r}]: not a search dimension")
            try:
                sweep.dims[path].encode(value)
            except KeyError:
                raise ConfigError(f"{where}.enqueue[{i}][{path!r}]: {value!r} is outside the "
                                  "search space") from None
        missing = [p for p in sweep.dims if p not in point]
        if missing:
            raise ConfigError(f"{where}.enqueue[{i}]: give a value for every dimension "
                              f"(missing {', '.join(missing)})")


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep spec file."""
    return parse_sweep(load_yaml(path), "sweep")
