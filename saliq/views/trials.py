"""A sweep's trials as every view reads them: the finished ones in the order they finished,
each with its objective values, its per-layer bits, its searched values and its run page.

Built from the trial records MLflow holds (`saliq.tracking.runs.sweep_records`); a view is
a pure function of a `SweepTrials`, testable without MLflow or plotting.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from saliq.config import parse_trial_config
from saliq.errors import ConfigError
from saliq.frontier import non_dominated
from saliq.models import activation_layers
from saliq.tracking.runs import TrialRecord

__all__ = ["EmptyView", "SweepTrials", "Trial", "is_precision", "sweep_trials"]


class EmptyView(Exception):
    """A view with nothing to show; its message is the one line that says why."""


def is_precision(path: str) -> bool:
    """A searched path that sets bit-widths: the views read it as the per-layer bits it
    resolves to."""
    return path == "precision" or path.startswith("precision.")


@dataclass(frozen=True)
class Trial:
    run_id: str
    trial_id: str
    plan: str
    values: tuple[float, ...]  # the objectives', in order
    bits: dict[str, int]  # "bits.conv1.weight" -> 4, "bits.conv1.act" -> 8 (layers with a PACT)
    sampled: dict[str, Any]  # each searched dimension's value, by dotted path
    link: str  # the run's page, relative to the MLflow UI: "#/experiments/1/runs/<id>"


@dataclass(frozen=True)
class SweepTrials:
    """The finished trials of one sweep (status FINISHED, every objective finite), in the
    order they finished; `unfinished` counts the others (failed, stopped, non-finite)."""

    title: str
    objectives: list[tuple[str, str]]  # (metric, "max" | "min")
    trials: list[Trial]
    unfinished: int = 0
    layers: tuple[str, ...] = ()  # every trial's quantizable layers, first to last
    log_scale: frozenset[str] = frozenset()  # searched paths sampled log-uniformly
    ui: str = "http://127.0.0.1:5000"  # the MLflow UI the run links point into
    ui_is_guess: bool = True  # no server holds the store: the UI's address is a guess

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]

    @cached_property
    def front(self) -> list[int]:
        """Indices of the non-dominated trials (duplicates all stay)."""
        return non_dominated([t.values for t in self.trials], self.directions)

    def searched_bits(self) -> list[str]:
        """The per-layer bits that differ between trials, layer by layer (weight, then act)."""
        names = [f"bits.{layer}.{kind}" for layer in self.layers for kind in ("weight", "act")]
        return [n for n in names if len({t.bits[n] for t in self.trials if n in t.bits}) > 1]

    def searched_paths(self) -> list[str]:
        """The searched dimensions, in the order the trials sampled them."""
        return list(dict.fromkeys(p for t in self.trials for p in t.sampled))

    def require(self, trials: int = 2) -> None:
        """Raise `EmptyView` unless at least `trials` trials finished (two: a comparison)."""
        if not self.trials:
            raise EmptyView(f"no trial finished ({self.unfinished} failed or stopped): "
                            "nothing to show" if self.unfinished else "the sweep has no trial yet")
        if len(self.trials) < trials:
            raise EmptyView("only one trial finished: nothing to compare it with yet")

    def require_searched_bits(self) -> list[str]:
        """`searched_bits()`, or `EmptyView` when no layer's bit-width varies."""
        self.require()
        names = self.searched_bits()
        if not names:
            plans = sorted({t.plan for t in self.trials})
            raise EmptyView(f"no layer's bit-width was searched: every trial runs "
                            f"{' / '.join(plans)}")
        return names


def _bits(config: dict, known: dict) -> tuple[tuple[str, ...], dict[str, int], str]:
    """(layers, per-layer bits, plan label) of a stored trial config; an unreadable one has
    none (the views leave it out of what needs bits). They follow from the model and the
    precision plan alone: `known` holds them by those two, parsed once for a sweep's plans."""
    key = json.dumps([config.get("model"), config.get("precision")], sort_keys=True)
    if key in known:
        return known[key]
    try:
        parsed = parse_trial_config(config)
    except ConfigError:
        return (), {}, "?"
    quantized = set(activation_layers(parsed.model.arch))
    bits = {}
    for layer, (w, a) in parsed.resolved_bits().items():
        bits[f"bits.{layer}.weight"] = w
        if layer in quantized:
            bits[f"bits.{layer}.act"] = a
    known[key] = tuple(parsed.layers()), bits, parsed.plan_label()
    return known[key]


def _log_scale(search_param: str | None) -> frozenset[str]:
    """The paths a spec's `search` (as the parent run's `spec.search` param holds it) samples
    log-uniformly; none if it is missing or cut short."""
    try:
        search = json.loads(search_param or "{}")
    except json.JSONDecodeError:
        return frozenset()
    return frozenset(p for p, d in search.items() if isinstance(d, dict) and "loguniform" in d)


def sweep_trials(parent, records: list[TrialRecord], objectives: list[tuple[str, str]], *,
                 title: str, ui: str, ui_is_guess: bool) -> SweepTrials:
    """The views' reading of a sweep: its parent run and trial records (`sweep_records`)."""
    names = [m for m, _ in objectives]
    finished = [r for r in records if r.status == "FINISHED"
                and all(math.isfinite(r.metrics.get(m, math.nan)) for m in names)]
    finished.sort(key=lambda r: (r.end_time is None, r.end_time or 0))
    trials, layers, known = [], {}, {}
    for r in finished:
        arch_layers, bits, plan = _bits(r.config, known)
        layers.update(dict.fromkeys(arch_layers))
        trials.append(Trial(r.run_id, r.trial_id, plan, tuple(r.metrics[m] for m in names),
                            bits, r.sampled,
                            f"#/experiments/{parent.info.experiment_id}/runs/{r.run_id}"))
    return SweepTrials(title, list(objectives), trials, len(records) - len(finished),
                       tuple(layers), _log_scale(parent.data.params.get("spec.search")),
                       ui.rstrip("/"), ui_is_guess)
