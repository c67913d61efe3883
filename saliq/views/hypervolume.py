"""`analysis/hypervolume`: is the sweep still improving? The frontier's hypervolume over the
first k finished trials, against k, in the order the trials finished.

The reference point is the frontier file's (`saliq.frontier.reference_point` over all the
finished trials), so the curve never falls and ends at the frontier file's hypervolume.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
from matplotlib.figure import Figure

from saliq.frontier import dominates, hypervolume, reference_point
from saliq.views.trials import SweepTrials

__all__ = ["Progress", "compute", "interactive", "picture"]


@dataclass(frozen=True)
class Progress:
    hypervolume: list[float]  # [k - 1]: the frontier of the first k finished trials
    improved: list[bool]  # [k - 1]: trial k joined that frontier
    labels: list[str]  # "trial plan" of trial k
    objectives: list[str]
    reference: list[float]


def compute(sweep: SweepTrials) -> Progress:
    sweep.require()
    points = [list(t.values) for t in sweep.trials]
    directions = sweep.directions
    reference = reference_point(points, directions)
    front: list[list[float]] = []
    volumes, improved = [], []
    for point in points:
        joins = not any(dominates(q, point, directions) for q in front)
        if joins:
            front = [q for q in front if not dominates(point, q, directions)] + [point]
        volumes.append(hypervolume(front, directions, reference) if joins or not volumes
                       else volumes[-1])
        improved.append(joins)
    return Progress(volumes, improved, [f"{t.trial_id} {t.plan}" for t in sweep.trials],
                    [f"{m} ({d})" for m, d in sweep.objectives], reference)


def _caption(data: Progress) -> str:
    return (f"hypervolume of {', '.join(data.objectives)} against the reference point "
            f"({', '.join(f'{r:.4g}' for r in data.reference)}); dots: a trial joined the "
            "frontier")


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
