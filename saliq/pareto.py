"""The Pareto frontier of a sweep, exported from MLflow into the frontier file.

Objectives are `(metric, direction)` pairs, direction `max` or `min`; the math is in
`saliq.frontier`, the file's shape in `saliq.frontier_file`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

from saliq import collector, tracking
from saliq.config import stored_plan_label
from saliq.errors import ConfigError, SaliqError
from saliq.frontier import DIRECTIONS, hypervolume, non_dominated, reference_point
from saliq.frontier_file import write_frontier
from saliq.tracking.logger import RunLogger
from saliq.tracking.runs import TrialRecord, sweep_records

__all__ = ["Exported", "export_frontier", "finish_sweep", "parse_objectives", "sweep_objectives"]

Objectives = list[tuple[str, str]]


def parse_objectives(text: str) -> Objectives:
    """`"accuracy:max,model_bits:min"` -> `[("accuracy", "max"), ("model_bits", "min")]`."""
    objectives = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, direction = part.partition(":")
        if direction not in DIRECTIONS or not name:
            raise ConfigError(f"--objectives {part!r}: write METRIC:max or METRIC:min, "
                              "comma-separated (e.g. accuracy:max,model_bits:min)")
        objectives.append((name, direction))
    if not objectives:
        raise ConfigError("--objectives: give at least one METRIC:max or METRIC:min")
    return objectives


def _candidates(records: list[TrialRecord], names: list[str], experiment: str, sweep_id: str
                ) -> tuple[list[TrialRecord], list[TrialRecord]]:
    """(finished, those with finite values of every objective); no finished trial, or an
    objective no finished trial reports, is a one-line error."""
    finished = [r for r in records if r.status == "FINISHED"]
    if not finished:
        tally = Counter(r.status.lower() for r in records)
        seen = ", ".join(f"{n} {status}" for status, n in sorted(tally.items())) or "no trial run"
        raise SaliqError(f"sweep {sweep_id} of experiment {experiment!r} has no finished trial "
                         f"({seen}): no frontier to export yet; export it once a trial has "
                         "finished, or choose another sweep with --sweep-id")
    reported = set().union(*(r.metrics for r in finished))
    unknown = [m for m in names if m not in reported]
    if unknown:
        shown = sorted({re.sub(r"_\d+$", "_<class>", m) for m in reported})
        raise ConfigError(f"objectives: no finished trial of {experiment} reports "
                          f"{', '.join(map(repr, unknown))} (they report: {', '.join(shown)})")
    candidates = [r for r in finished
                  if all(math.isfinite(r.metrics.get(m, math.nan)) for m in names)]
    if not candidates:
        raise SaliqError(f"no finished trial of {experiment} has finite "
                         f"{', '.join(names)}: no frontier to export (see its runs' "
                         "saliq.failure_reason tags)")
    return finished, candidates


def _entry(n: int, record: TrialRecord, names: list[str]) -> dict[str, Any]:
    return {
        "entry": n,
        "run_id": record.run_id,
        "trial_id": record.trial_id,
        "plan": stored_plan_label(record.config),
        "objectives": {m: record.metrics[m] for m in names},
        "metrics": dict(sorted(record.metrics.items())),
        "config": record.config,
    }


def sweep_objectives(parent) -> Objectives:
    """The objectives a sweep's parent run names (its spec's)."""
    return [tuple(o) for o in json.loads(parent.data.tags[tracking.TAG_OBJECTIVES])]


class Exported(NamedTuple):
    """The frontier file written, and what it holds (reading 10,000 trials' YAML back costs
    more than the export)."""

    path: Path
    frontier: dict


def export_frontier(client, experiment: str, out: str | Path, *,
                    objectives: Objectives | None = None, sweep_id: str | None = None,
                    log_to_parent: bool = True, store_uri: str | None = None) -> Exported:
    """Read a sweep's finished trial runs from MLflow, write the frontier file to `out`, and
    (optionally) log it on the sweep's parent run with the views (`saliq.views`: the Pareto
    plot and `analysis/*`, written beside it in `analysis/`).

    The sweep is `sweep_id`, or the latest sweep of the experiment; the objectives are the
    sweep's own unless given. The views link to the runs in the UI of `store_uri` (default:
    the client's tracking URI); they never fail the export.
    """
    with collector.paused():  # millions of objects built, none of them in a cycle
        return _export(client, experiment, out, objectives, sweep_id, log_to_parent, store_uri)


def _export(client, experiment: str, out: str | Path, objectives: Objectives | None,
            sweep_id: str | None, log_to_parent: bool, store_uri: str | None) -> Exported:
    parent, records = sweep_records(client, experiment, sweep_id, store_uri=store_uri)
    sweep_id = parent.data.tags[tracking.TAG_SWEEP]
    if objectives is None:
        objectives = sweep_objectives(parent)
    names, directions = [m for m, _ in objectives], [d for _, d in objectives]
    finished, candidates = _candidates(records, names, experiment, sweep_id)
    points = [[r.metrics[m] for m in names] for r in candidates]
    front = non_dominated(points, directions)
    # sorted by the first objective, best first
    front.sort(key=lambda i: -points[i][0] if directions[0] == "max" else points[i][0])
    ref = reference_point(points, directions)
    views = None
    if log_to_parent:  # drawn beside the frontier file's writing (most of a large export)
        from saliq.views.writer import ANALYSIS, PendingViews  # plotting: not for --no-log

        views = PendingViews(parent, records, objectives, Path(out).parent / ANALYSIS,
                             title=f"{experiment}: {sweep_id}",
                             store_uri=store_uri or client.tracking_uri)
    try:
        frontier = {
            "sweep": parent.data.tags.get("mlflow.runName", "").removeprefix("sweep ")
            or experiment,
            "experiment": experiment,
            "sweep_id": sweep_id,
            "parent_run_id": parent.info.run_id,
            "objectives": [{"name": m, "direction": d} for m, d in objectives],
            "trials": len(finished),
            "hypervolume": hypervolume(points, directions, ref),
            "reference_point": ref,
            "entries": [_entry(n, candidates[i], names) for n, i in enumerate(front)],
        }
        path = write_frontier(out, frontier)
    except BaseException:
        if views is not None:  # no views of a frontier that was not written
            views.discard()
        raise
    if views is not None:
        RunLogger(client, parent.info.run_id).log_artifact(path, "pareto")
        views.log(client)
    return Exported(path, frontier)


def finish_sweep(client, experiment: str, sweep_id: str, sweep_dir: Path) -> Path:
    """What a sweep does once its trials are done: `<sweep_dir>/frontier.yaml`, logged with
    the views on its parent run (their run links into the UI of the sweep's store, not of the
    private server the client reaches it through)."""
    record = json.loads((sweep_dir / "sweep.json").read_text())
    return export_frontier(client, experiment, sweep_dir / "frontier.yaml", sweep_id=sweep_id,
                           store_uri=record["tracking_uri"]).path
