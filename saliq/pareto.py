"""Pareto frontiers: non-dominated sort, hypervolume, and the frontier file.

Objectives are `(metric, direction)` pairs, direction `max` or `min`. The frontier file
(DESIGN.md) holds the sweep, its objectives and one entry per non-dominated trial with its
MLflow run id, objective values, final metrics and complete trial config, so that
`saliq trial --config frontier.yaml --entry N` re-runs entry N.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from saliq.errors import ConfigError, SaliqError

__all__ = [
    "DIRECTIONS",
    "dominates",
    "export_frontier",
    "frontier_entry_config",
    "frontier_table",
    "hypervolume",
    "is_frontier",
    "non_dominated",
    "parse_objectives",
    "reference_point",
    "write_frontier",
]

Objectives = list[tuple[str, str]]
DIRECTIONS = ("max", "min")


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


def _as_min(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(-v if d == "max" else v for v, d in zip(values, directions, strict=True))


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """`a` is at least as good as `b` in every objective and better in one."""
    a, b = _as_min(a, directions), _as_min(b, directions)
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (duplicates all stay), in input order."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, directions) for j, q in enumerate(points) if j != i)]


def reference_point(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[float]:
    """A reference point every point improves on: 0 (or the worst value, if lower) for `max`
    objectives such as accuracy, and the worst value seen for `min` objectives."""
    ref = []
    for k, d in enumerate(directions):
        column = [p[k] for p in points] or [0.0]
        ref.append(min(0.0, min(column)) if d == "max" else max(column))
    return ref


def _hv_min(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume dominated by `points` (minimisation) up to `ref`, by slicing the last axis."""
    points = [p for p in points if all(x < r for x, r in zip(p, ref, strict=True))]
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    points.sort(key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(points):
        upper = points[i + 1][-1] if i + 1 < len(points) else ref[-1]
        if upper > p[-1]:
            volume += (upper - p[-1]) * _hv_min([q[:-1] for q in points[: i + 1]], ref[:-1])
    return volume


def hypervolume(points: Sequence[Sequence[float]], directions: Sequence[str],
                reference: Sequence[float]) -> float:
    """Volume of objective space dominated by `points` and bounded by `reference`."""
    finite = [p for p in points if all(math.isfinite(v) for v in p)]
    return _hv_min([_as_min(p, directions) for p in finite], _as_min(reference, directions))


def write_frontier(path: str | Path, frontier: dict[str, Any]) -> Path:
    """Write the frontier YAML atomically (a reader never sees half a file)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a directory; give a file name such as frontier.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".frontier-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(frontier, f, sort_keys=False, allow_unicode=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def is_frontier(data: Any) -> bool:
    return isinstance(data, dict) and "entries" in data and "objectives" in data


def frontier_entry_config(frontier: dict, entry: int | None, path: str) -> dict:
    """The complete trial config of entry `entry` of a frontier file."""
    entries = frontier.get("entries")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: the frontier has no entries")
    if entry is None:
        raise ConfigError(f"{path}: is a frontier file: choose the trial to re-run with "
                          f"--entry N (0-{len(entries) - 1})")
    if not 0 <= entry < len(entries):
        raise ConfigError(f"{path}: --entry {entry} is out of range (0-{len(entries) - 1})")
    item = entries[entry]
    if not isinstance(item, dict) or not isinstance(item.get("config"), dict):
        raise ConfigError(f"{path}: entry {entry} has no trial config")
    return item["config"]


def export_frontier(client, experiment: str, out: str | Path, *,
                    objectives: Objectives | None = None, sweep_id: str | None = None,
                    log_to_parent: bool = True) -> Path:
    """Read a sweep's finished trial runs from MLflow, write the frontier file to `out`, and
    (optionally) log it with a Pareto plot (PNG and interactive HTML) on the sweep's parent run.

    The sweep is `sweep_id`, or the latest sweep of the experiment; the objectives are the
    sweep's own unless given.
    """
    import json

    from saliq import tracking
    from saliq.report import pareto_plot
    from saliq.trial import stored_plan_label

    parent, records = tracking.sweep_records(client, experiment, sweep_id)
    sweep_id = parent.data.tags[tracking.TAG_SWEEP]
    if objectives is None:
        objectives = [tuple(o) for o in json.loads(parent.data.tags[tracking.TAG_OBJECTIVES])]
    names = [m for m, _ in objectives]
    directions = [d for _, d in objectives]

    finished = [r for r in records if r.status == "FINISHED"]
    reported = set().union(*(r.metrics for r in finished))
    unknown = [m for m in names if m not in reported]
    if finished and unknown:
        shown = sorted({re.sub(r"_\d+$", "_<class>", m) for m in reported})
        raise ConfigError(f"objectives: no finished trial of {experiment} reports "
                          f"{', '.join(map(repr, unknown))} (they report: {', '.join(shown)})")
    candidates = [r for r in finished
                  if all(math.isfinite(r.metrics.get(m, math.nan)) for m in names)]
    if not candidates:
        raise SaliqError(f"no finished trial of {experiment} has finite "
                         f"{', '.join(names)}: no frontier to export (see its runs' "
                         "saliq.failure_reason tags)")
    points = [[r.metrics[m] for m in names] for r in candidates]
    front = non_dominated(points, directions)
    first = 0
    front.sort(key=lambda i: -points[i][first] if directions[first] == "max" else points[i][first])
    ref = reference_point(points, directions)
    entries = []
    for n, i in enumerate(front):
        record = candidates[i]
        entries.append({
            "entry": n,
            "run_id": record.run_id,
            "trial_id": record.trial_id,
            "plan": stored_plan_label(record.config),
            "objectives": {m: record.metrics[m] for m in names},
            "metrics": dict(sorted(record.metrics.items())),
            "config": record.config,
        })
    frontier = {
        "sweep": parent.data.tags.get("mlflow.runName", "").removeprefix("sweep ") or experiment,
        "experiment": experiment,
        "sweep_id": sweep_id,
        "parent_run_id": parent.info.run_id,
        "objectives": [{"name": m, "direction": d} for m, d in objectives],
        "trials": len(finished),
        "hypervolume": hypervolume(points, directions, ref),
        "reference_point": ref,
        "entries": entries,
    }
    path = write_frontier(out, frontier)
    if log_to_parent:
        folder = Path(path).parent
        labels = [f"{r.trial_id} {stored_plan_label(r.config)}" for r in candidates]
        png, html = pareto_plot(points, front, objectives, labels, folder / "pareto.png",
                                folder / "pareto.html", title=f"{experiment}: {sweep_id}")
        logger = tracking.RunLogger(client, parent.info.run_id)
        for artifact in (path, png, html):
            logger.log_artifact(artifact, "pareto")
    return path


def frontier_table(frontier: dict) -> list[str]:
    """The frontier as aligned text rows, for the terminal."""
    names = [o["name"] for o in frontier["objectives"]]
    header = ["entry", "trial", "plan", *names, "run id"]
    rows = [[str(e["entry"]), str(e["trial_id"]), e["plan"],
             *(f"{e['objectives'][m]:.4g}" for m in names), e["run_id"]]
            for e in frontier["entries"]]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]
