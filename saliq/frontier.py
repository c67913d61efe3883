"""Pareto frontier math: dominance, the non-dominated set, the hypervolume and its reference
point, over objectives given as directions (`max` or `min`).

Pure functions of numbers, below the sweep layer: the live progress line and the frontier
export both use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["DIRECTIONS", "dominates", "hypervolume", "non_dominated", "reference_point"]

DIRECTIONS = ("max", "min")


def _as_min(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(-v if d == "max" else v for v, d in zip(values, directions, strict=True))


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """`a` is at least as good as `b` in every objective and better in one.

    >>> dominates([0.9, 10], [0.8, 12], ["max", "min"])
    True
    """
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
    """Volume of objective space dominated by `points` and bounded by `reference`.

    >>> hypervolume([[0.5, 0.5]], ["max", "max"], [0.0, 0.0])
    0.25
    """
    finite = [p for p in points if all(math.isfinite(v) for v in p)]
    return _hv_min([_as_min(p, directions) for p in finite], _as_min(reference, directions))
