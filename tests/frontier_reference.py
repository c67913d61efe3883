"""saliq.frontier as it was before moocore (commit 8c73019): the definitions in a few lines of
pure Python, O(n^2) for the set and recursive slicing for the volume. The reference the
library is tested against, and the `old` side of bench/scale.py."""

from __future__ import annotations

import math


def as_min(values, directions):
    return tuple(-v if d == "max" else v for v, d in zip(values, directions, strict=True))


def dominates(a, b, directions):
    a, b = as_min(a, directions), as_min(b, directions)
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def non_dominated(points, directions):
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, directions) for j, q in enumerate(points) if j != i)]


def _hv_min(points, ref):
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


def hypervolume(points, directions, reference):
    finite = [p for p in points if all(math.isfinite(v) for v in p)]
    return _hv_min([as_min(p, directions) for p in finite], as_min(reference, directions))
