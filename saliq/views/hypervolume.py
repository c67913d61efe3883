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

from saliq.frontier import hypervolume, reference_point
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
    # the front kept as rows to minimise: each trial is one vectorised test against it
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    front = np.empty((0, len(directions)))
    fronts, improved = [], []  # the front after each trial, as an index into `snapshots`
    snapshots: list[np.ndarray] = []
    for point in points:
        row = np.asarray(point, dtype=float) * signs
        dominated = ((front <= row).all(axis=1) & (front < row).any(axis=1)).any()
        joins = not dominated and not np.isnan(row).any()
        if joins or not snapshots:
            if joins:
                beaten = (row <= front).all(axis=1) & (row < front).any(axis=1)
                front = np.vstack([front[~beaten], row])
            snapshots.append(front)
        fronts.append(len(snapshots) - 1)
        improved.append(joins)
    volumes = _volumes(snapshots, fronts, signs, directions, reference)
    sampled = MAX_VOLUMES if len(snapshots) > MAX_VOLUMES else 0
    return Progress(volumes, improved, [f"{t.trial_id} {t.plan}" for t in sweep.trials],
                    [f"{m} ({d})" for m, d in sweep.objectives], reference, sampled)


def _volumes(snapshots, fronts: list[int], signs, directions, reference) -> list[float]:
    """The hypervolume after each trial: of every front it took, or past `MAX_VOLUMES` of
    the front at evenly spaced trials (held until the next), always of the last one."""
    n = len(fronts)
    if len(snapshots) <= MAX_VOLUMES:
        at = {k: k for k in range(n)}
    else:
        ks = sorted({round(i * (n - 1) / (MAX_VOLUMES - 1)) for i in range(MAX_VOLUMES)})
        at = {k: ks[max(0, np.searchsorted(ks, k, side="right") - 1)] for k in range(n)}
    cache: dict[int, float] = {}
    volumes = []
    for k in range(n):
        index = fronts[at[k]]
        if index not in cache:
            cache[index] = hypervolume((snapshots[index] * signs).tolist(), directions,
                                       reference)
        volumes.append(cache[index])
    return volumes


def _caption(data: Progress) -> str:
    return (f"hypervolume of {', '.join(data.objectives)} against the reference point "
            f"({', '.join(f'{r:.4g}' for r in data.reference)}); dots: a trial joined the "
            "frontier" + (f"; computed at {data.sampled_at} evenly spaced trial counts"
                          if data.sampled_at else ""))


def interactive(data: Progress, title: str) -> go.Figure:
    k = list(range(1, len(data.hypervolume) + 1))
    joined = [i for i, j in enumerate(data.improved) if j]
    figure = go.Figure([
        go.Scatter(x=k, y=data.hypervolume, mode="lines", line={"shape": "hv"},
                   name="frontier hypervolume", hoverinfo="skip"),
        go.Scatter(x=[k[i] for i in joined], y=[data.hypervolume[i] for i in joined],
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
