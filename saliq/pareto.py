"""Pareto frontiers: non-dominated sort, hypervolume, and the frontier file.

Objectives are `(metric, direction)` pairs, direction `max` or `min`. The frontier file
(DESIGN.md) holds the sweep, its objectives and one entry per non-dominated trial with its
MLflow run id, objective values, final metrics and complete trial config, so that
`saliq trial --config frontier.yaml --entry N` re-runs entry N.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from saliq.errors import ConfigError

__all__ = [
    "DIRECTIONS",
    "dominates",
    "frontier_entry_config",
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
