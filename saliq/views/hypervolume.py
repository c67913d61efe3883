"""`analysis/hypervolume`: is the sweep still improving? The frontier's hypervolume over the
first k finished trials, against k, in the order the trials finished.

The reference point is the frontier file's (`saliq.frontier.reference_point` over all the
finished trials), so the curve never falls and ends at the frontier file's hypervolume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure

from saliq.frontier import hypervolume, non_dominated, reference_point
from saliq.views.trials import SweepTrials

__all__ = ["Progress", "compute", "interactive", "picture"]


@dataclass(frozen=True)
class Progress:
    hypervolume: list[float]  # [k - 1]: the frontier of the first k finished trials
    improved: list[bool]  # [k - 1]: trial k joined that frontier
    labels: list[str]  # "trial plan" of trial k
    objectives: list[str]
    reference: list[float]
    sampled_at: int = 0  # trial counts the volume was computed at (0: after every trial)


# volumes computed at most this often: each is exact, but a 10,000-trial sweep's front moves
# thousands of times; beyond this many moves the curve is the volume at evenly spaced trials
MAX_VOLUMES = 400


def compute(sweep: SweepTrials) -> Progress:
    sweep.require()
    points = [list(t.values) for t in sweep.trials]
    directions = sweep.directions
    reference = reference_point(points, directions)
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    values = np.asarray(points, dtype=float)
    joins = _joins(values * signs)
    # the frontier after trial k is that of the first joined[k] trials to join: its volume
    joined = np.cumsum(joins)
    volumes = _volumes(values[joins], joined, directions, reference)
    sampled = MAX_VOLUMES if len(np.unique(joined)) > MAX_VOLUMES else 0
    return Progress(volumes, joins.tolist(), [f"{t.trial_id} {t.plan}" for t in sweep.trials],
                    [f"{m} ({d})" for m, d in sweep.objectives], reference, sampled)


BLOCK = 256  # trials tested against each other at once


def _joins(rows: np.ndarray) -> np.ndarray:
    """joins[k]: row k (objectives to minimise) is comparable and no earlier row dominates
    it, i.e. trial k joined the frontier of the trials before it. A block of rows at a time
    is tested against the rows that joined before it and against its own earlier rows (an
    earlier row that did not join is dominated by one that did, and dominates no more)."""
    n, d = rows.shape
    joins = np.zeros(n, dtype=bool)
    for start in range(0, n, BLOCK):
        block = rows[start:start + BLOCK]
        earlier = rows[:start][joins[:start]]
        dominated = np.zeros(len(block), dtype=bool)
        for chunk in range(0, len(earlier), 4 * BLOCK):
            dominated |= _dominates(earlier[chunk:chunk + 4 * BLOCK], block).any(axis=0)
        dominated |= np.triu(_dominates(block, block), k=1).any(axis=0)  # by an earlier row
        joins[start:start + len(block)] = ~dominated & ~np.isnan(block).any(axis=1)
    return joins


def _dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[i, j]: row a[i] dominates row b[j] (minimising; NaN dominates and is dominated by
    nothing)."""
    at_most = np.ones((len(a), len(b)), dtype=bool)
    better = np.zeros((len(a), len(b)), dtype=bool)
    for k in range(a.shape[1]):  # one objective at a time: no (a, b, objectives) arrays
        column, other = a[:, k, None], b[None, :, k]
        at_most &= column <= other
        better |= column < other
    return at_most & better


def _volumes(joined_points: np.ndarray, joined: np.ndarray, directions, reference
             ) -> list[float]:
    """The hypervolume after each trial k, of the first joined[k] points to join: exact for
    every value it takes, or past `MAX_VOLUMES` of them at evenly spaced trials (held until
    the next), always at the last."""
    n = len(joined)
    if len(np.unique(joined)) <= MAX_VOLUMES:
        at = np.arange(n)
    else:
        ks = np.unique(np.round(np.linspace(0, n - 1, MAX_VOLUMES)).astype(int))
        at = ks[np.searchsorted(ks, np.arange(n), side="right") - 1]
    cache: dict[int, float] = {0: 0.0}
    volumes = []
    for k in at:
        count = int(joined[k])
        if count not in cache:
            front = joined_points[:count]
            front = front[non_dominated(front, directions)]
            cache[count] = hypervolume(front, directions, reference)
        volumes.append(cache[count])
    return volumes


def _caption(data: Progress) -> str:
    return (f"hypervolume of {', '.join(data.objectives)} against the reference point "
            f"({', '.join(f'{r:.4g}' for r in data.reference)}); dots: a trial joined the "
            "frontier" + (f"; computed at {data.sampled_at} evenly spaced trial counts"
                          if data.sampled_at else ""))


def interactive(data: Progress, title: str) -> go.Figure:
    # as arrays: plotly validates (and copies) a list value by value
    k = np.arange(1, len(data.hypervolume) + 1)
    volumes = np.asarray(data.hypervolume, dtype=float)
    joined = np.flatnonzero(data.improved)
    figure = go.Figure([
        go.Scatter(x=k, y=volumes, mode="lines", line={"shape": "hv"},
                   name="frontier hypervolume", hoverinfo="skip"),
        go.Scatter(x=k[joined], y=volumes[joined],
                   mode="markers", name="joined the frontier", marker={"size": 9},
                   text=[data.labels[i] for i in joined],
                   hovertemplate="after %{x} trials: %{y:.5g}<br>%{text}<extra></extra>")])
    figure.update_layout(title=f"{title}<br><sub>{_caption(data)}</sub>",
                         xaxis={"title": "trials finished", "dtick": max(1, len(k) // 10)},
                         yaxis={"title": "hypervolume"}, height=460)
    return figure


def picture(data: Progress, title: str) -> Figure:
    k = range(1, len(data.hypervolume) + 1)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.step(k, data.hypervolume, where="post", color="#1f77b4")
    joined = [i for i, j in enumerate(data.improved) if j]
    ax.scatter([i + 1 for i in joined], [data.hypervolume[i] for i in joined], color="#d1495b",
               zorder=3, s=24, label="a trial joined the frontier")
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"{title}\n{_caption(data)}", fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
