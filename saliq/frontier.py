"""Pareto frontier math: dominance, the non-dominated set, the hypervolume and its reference
point, over objectives given as directions (`max` or `min`).

Pure functions of numbers, below the sweep layer: the live progress line and the frontier
export both use them. The set and the volume are moocore's C implementations (Kung's
O(n log n) sweep for up to 3 objectives, HV3D+ / HV4D+ for the volume), so a 10,000-trial
sweep's frontier takes milliseconds; both are exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import moocore
import numpy as np

__all__ = ["DIRECTIONS", "dominates", "hypervolume", "non_dominated", "reference_point"]

DIRECTIONS = ("max", "min")


def _as_min(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(-v if d == "max" else v for v, d in zip(values, directions, strict=True))


def _matrix(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """(n, objectives) floats; ValueError if a point has another number of values."""
    if not len(points):
        return np.empty((0, len(directions)))
    matrix = np.asarray(points, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] != len(directions):
        raise ValueError(f"each point needs {len(directions)} values, one per objective")
    return matrix


def _maximise(directions: Sequence[str]) -> list[bool]:
    return [d == "max" for d in directions]


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """`a` is at least as good as `b` in every objective and better in one.

    >>> dominates([0.9, 10], [0.8, 12], ["max", "min"])
    True
    """
    a, b = _as_min(a, directions), _as_min(b, directions)
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates, in input order. Duplicates all stay;
    a point with a NaN value is on no frontier (it compares with nothing).

    >>> non_dominated([[0.9, 10], [0.8, 12], [0.9, 10], [0.7, 5]], ["max", "min"])
    [0, 2, 3]
    """
    matrix = _matrix(points, directions)
    comparable = np.flatnonzero(~np.isnan(matrix).any(axis=1))
    if not len(comparable):
        return []
    # keep_weakly: a duplicate of a non-dominated point is non-dominated too
    keep = moocore.is_nondominated(matrix[comparable], maximise=_maximise(directions),
                                   keep_weakly=True)
    return comparable[keep].tolist()


def reference_point(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[float]:
    """A reference point every point improves on: 0 (or the worst value, if lower) for `max`
    objectives such as accuracy, and the worst value seen for `min` objectives."""
    ref = []
    for k, d in enumerate(directions):
        column = [p[k] for p in points] or [0.0]
        ref.append(min(0.0, min(column)) if d == "max" else max(column))
    return ref


def hypervolume(points: Sequence[Sequence[float]], directions: Sequence[str],
                reference: Sequence[float]) -> float:
    """Volume of objective space dominated by `points` and bounded by `reference`; points
    with a non-finite value, and points that do not improve on `reference` in every
    objective, add nothing.

    >>> hypervolume([[0.5, 0.5]], ["max", "max"], [0.0, 0.0])
    0.25
    """
    matrix = _matrix(points, directions)
    finite = matrix[np.isfinite(matrix).all(axis=1)]
    if not len(finite):
        return 0.0
    return float(moocore.hypervolume(finite, ref=np.asarray(reference, dtype=float),
                                     maximise=_maximise(directions)))
