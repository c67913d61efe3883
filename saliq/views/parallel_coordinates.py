"""`analysis/parallel_coordinates`: every finished trial as a line through one axis per
searched dimension and one per objective, coloured by the first objective.

A dimension sampled log-uniformly is drawn as its log10; a categorical one (named variants,
strings) as its options in order, each at an integer position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from saliq.views.trials import SweepTrials

__all__ = ["Axis", "Parallel", "compute", "interactive", "picture"]


@dataclass(frozen=True)
class Axis:
    label: str
    values: list[float]  # one per trial, in `Parallel.labels`' order
    ticks: list[str] | None = None  # a categorical axis: the option at each integer position


@dataclass(frozen=True)
class Parallel:
    axes: list[Axis]  # the searched dimensions, then the objectives
    colour: str  # the first objective's axis label
    labels: list[str]  # "trial plan", one per line


def _axis(path: str, values: list, log: bool) -> Axis:
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        if log and all(v > 0 for v in values):
            return Axis(f"log10 {path}", [math.log10(v) for v in values])
        return Axis(path, [float(v) for v in values])
    options = sorted({str(v) for v in values})
    return Axis(path, [float(options.index(str(v))) for v in values], options)


def compute(sweep: SweepTrials) -> Parallel:
    sweep.require()
    paths = sweep.searched_paths()
    trials = [t for t in sweep.trials if all(p in t.sampled for p in paths)]
    axes = [_axis(p, [t.sampled[p] for t in trials], p in sweep.log_scale) for p in paths]
    axes += [Axis(f"{m} ({d})", [t.values[k] for t in trials])
             for k, (m, d) in enumerate(sweep.objectives)]
    return Parallel(axes, axes[len(paths)].label, [f"{t.trial_id} {t.plan}" for t in trials])


def interactive(data: Parallel, title: str) -> go.Figure:
    colour = next(a for a in data.axes if a.label == data.colour)
    dimensions = []
    for axis in data.axes:  # as arrays: plotly validates (and copies) a list value by value
        dimension = {"label": axis.label, "values": np.asarray(axis.values)}
        if axis.ticks is not None:
            dimension.update(tickvals=list(range(len(axis.ticks))), ticktext=axis.ticks)
        dimensions.append(dimension)
    figure = go.Figure(go.Parcoords(
        dimensions=dimensions,
        line={"color": np.asarray(colour.values), "colorscale": "Viridis", "showscale": True,
              "colorbar": {"title": data.colour}},
        labelside="bottom", labelangle=20))  # long dotted paths, tilted under their axes
    figure.update_layout(title=f"{title}<br><sub>{len(data.labels)} finished trials, coloured "
                               f"by {data.colour}; drag along an axis to filter</sub>",
                         height=600, margin={"l": 90, "r": 110, "t": 120, "b": 160})
    return figure


def picture(data: Parallel, title: str) -> Figure:
    n = len(data.axes)
    fig = Figure(figsize=(max(7.0, 1.7 * n), 4.6))
    ax = fig.subplots()
    colour = next(a for a in data.axes if a.label == data.colour).values
    norm = Normalize(min(colour), max(colour))
    scaled = []
    for axis in data.axes:  # each axis spans its own range, drawn on [0, 1]
        lo, hi = min(axis.values), max(axis.values)
        scaled.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in axis.values])
    lines = np.asarray(scaled).T  # (trials, axes)
    order = np.argsort(colour, kind="stable")  # the best drawn last, on top
    x = np.arange(n, dtype=float)
    # one collection, not an artist per trial: 10,000 lines draw in about a second
    ax.add_collection(LineCollection(
        [np.column_stack([x, lines[i]]) for i in order], alpha=0.8, linewidths=1.4,
        colors=colormaps["viridis"](norm(np.asarray(colour)[order]))))
    ax.set_xlim(-0.3, n - 0.7)
    for i, axis in enumerate(data.axes):
        ax.axvline(i, color="#444", lw=0.8)
        lo, hi = min(axis.values), max(axis.values)
        if axis.ticks is not None:
            low, high = axis.ticks[int(lo)], axis.ticks[int(hi)]
        else:
            low, high = f"{lo:.3g}", f"{hi:.3g}"
        ax.text(i, -0.06, low, ha="center", va="top", fontsize=7)
        ax.text(i, 1.04, high, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(n), [a.label for a in data.axes], rotation=20, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.12)
    ax.set_title(f"{title}\n{len(data.labels)} finished trials, coloured by {data.colour}",
                 fontsize=9)
    fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label=data.colour)
    fig.tight_layout()
    return fig
