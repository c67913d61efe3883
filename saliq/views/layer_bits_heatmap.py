"""`analysis/layer_bits_heatmap`: which bit-widths each layer takes on the Pareto frontier.

Two panels, weights and activations (of the layers a PACT follows); rows are layers first to
last, columns bit-widths. A cell is the share of the frontier's trials that give the layer
that width (each row sums to 1), annotated with the mean objective values of all finished
trials that give it that width: where the frontier puts conv2 at 2 bits, and what 2 bits at
conv2 cost on average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from saliq.quant.plan import FULL_PRECISION
from saliq.views.trials import SweepTrials

__all__ = ["Heatmap", "Panel", "compute", "interactive", "picture"]

KINDS = {"weight": "weight bits", "act": "activation bits"}


@dataclass(frozen=True)
class Panel:
    kind: str  # "weight" | "act"
    layers: list[str]  # rows, first to last
    widths: list[int]  # columns, ascending
    shares: list[list[float]]  # [row][column]: share of the frontier's trials; rows sum to 1
    means: list[list[dict[str, float] | None]]  # mean objectives of the trials using it
    counts: list[list[int]]  # how many finished trials use it


@dataclass(frozen=True)
class Heatmap:
    panels: list[Panel]
    objectives: list[str]
    frontier: int
    trials: int


def _panel(sweep: SweepTrials, kind: str) -> Panel | None:
    front = [sweep.trials[i] for i in sweep.front]
    names = {layer: f"bits.{layer}.{kind}" for layer in sweep.layers
             if any(f"bits.{layer}.{kind}" in t.bits for t in front)}
    if not names:
        return None
    widths = sorted({t.bits[n] for t in sweep.trials for n in names.values() if n in t.bits})
    shares, means, counts = [], [], []
    for name in names.values():
        on_front = [t.bits[name] for t in front if name in t.bits]
        shares.append([on_front.count(w) / len(on_front) for w in widths])
        users = [[t for t in sweep.trials if t.bits.get(name) == w] for w in widths]
        counts.append([len(u) for u in users])
        means.append([{m: math.fsum(t.values[k] for t in u) / len(u)
                       for k, (m, _) in enumerate(sweep.objectives)} if u else None
                      for u in users])
    return Panel(kind, list(names), widths, shares, means, counts)


def compute(sweep: SweepTrials) -> Heatmap:
    sweep.require_searched_bits()
    panels = [p for kind in KINDS if (p := _panel(sweep, kind)) is not None]
    return Heatmap(panels, [m for m, _ in sweep.objectives], len(sweep.front), len(sweep.trials))


def _width(bits: int) -> str:
    return f"{bits} (FP)" if bits >= FULL_PRECISION else str(bits)


def _cell(share: float, means: dict[str, float] | None, count: int, sep: str) -> str:
    if means is None:
        return ""
    return sep.join([f"{share:.0%} (n={count})", *(f"{m} {v:.3f}" for m, v in means.items())])


def _caption(data: Heatmap) -> str:
    return (f"share of the {data.frontier} frontier trials using each width; beside it the "
            f"mean objectives of all the {data.trials} finished trials using it (n)")


def interactive(data: Heatmap, title: str) -> go.Figure:
    figure = make_subplots(1, len(data.panels), subplot_titles=[KINDS[p.kind] for p in data.panels],
                           horizontal_spacing=0.12)
    for c, panel in enumerate(data.panels, start=1):
        text = [[_cell(s, m, n, "<br>") for s, m, n in zip(*row, strict=True)]
                for row in zip(panel.shares, panel.means, panel.counts, strict=True)]
        figure.add_trace(go.Heatmap(
            z=panel.shares, x=[_width(w) for w in panel.widths], y=panel.layers, text=text,
            texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1, showscale=c == 1,
            colorbar={"title": "share", "tickformat": ".0%"}, xgap=2, ygap=2,
            hovertemplate="%{y} at %{x} bits<br>%{text}<extra></extra>"), 1, c)
        figure.update_xaxes(title_text="bits", type="category", row=1, col=c)
        figure.update_yaxes(autorange="reversed", type="category", row=1, col=c)
    figure.update_layout(title=f"{title}<br><sub>{_caption(data)}</sub>",
                         height=max(420, 160 + 90 * max(len(p.layers) for p in data.panels)))
    return figure


def picture(data: Heatmap, title: str) -> Figure:
    rows = max(len(p.layers) for p in data.panels)
    cols = sum(len(p.widths) for p in data.panels)
    fig = Figure(figsize=(2.0 + 1.9 * cols, 1.6 + 0.95 * rows))
    axes = fig.subplots(1, len(data.panels), squeeze=False,
                        width_ratios=[len(p.widths) for p in data.panels])[0]
    for ax, panel in zip(axes, data.panels, strict=True):
        ax.imshow(np.asarray(panel.shares), cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for r, row in enumerate(zip(panel.shares, panel.means, panel.counts, strict=True)):
            for c, (share, means, count) in enumerate(zip(*row, strict=True)):
                ax.text(c, r, _cell(share, means, count, "\n"), ha="center", va="center",
                        fontsize=7, color="white" if share > 0.6 else "black")
        ax.set_xticks(range(len(panel.widths)), [_width(w) for w in panel.widths])
        ax.set_yticks(range(len(panel.layers)), panel.layers)
        ax.set_xlabel("bits")
        ax.set_title(KINDS[panel.kind], fontsize=10)
    fig.suptitle(f"{title}\n{_caption(data)}", fontsize=9)
    fig.tight_layout()
    return fig
