"""`pareto/pareto`: every finished trial as a dot, the frontier highlighted, one panel per
pair of objectives (one objective: its values against the trial's number).

The page shows each trial's plan, objective values and MLflow run page on hover, and a
click puts the run page's link under the plot. A page the MLflow UI serves (or any MLflow
server) links into that UI; a page opened from a file links to the tracking server, or, for
a store no server holds, to where `mlflow ui` serves it by default.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from saliq.views.trials import SweepTrials

__all__ = ["Pareto", "compute", "interactive", "picture", "script"]

GREY, RED = "#9aa5b1", "#d1495b"


@dataclass(frozen=True)
class Pareto:
    points: list[tuple[float, ...]]
    front: list[int]
    objectives: list[tuple[str, str]]
    labels: list[tuple[str, str]]  # (trial id, plan)
    links: list[str]  # each run's page, relative to the UI
    ui: str
    ui_is_guess: bool

    def pairs(self) -> list[tuple[int, int]]:
        n = len(self.objectives)
        return [(0, 0)] if n == 1 else list(itertools.combinations(range(n), 2))

    def name(self, k: int) -> str:
        return f"{self.objectives[k][0]} ({self.objectives[k][1]})"


def compute(sweep: SweepTrials) -> Pareto:
    sweep.require(trials=1)
    return Pareto([t.values for t in sweep.trials], list(sweep.front), sweep.objectives,
                  [(t.trial_id, t.plan) for t in sweep.trials], [t.link for t in sweep.trials],
                  sweep.ui, sweep.ui_is_guess)


def _coordinates(data: Pareto, a: int, b: int, indices: list[int]) -> tuple[list, list]:
    xs = [data.points[i][a] for i in indices]
    ys = [data.points[i][b] for i in indices] if a != b else list(indices)
    return xs, ys


def interactive(data: Pareto, title: str) -> go.Figure:
    pairs = data.pairs()
    figure = make_subplots(1, len(pairs), horizontal_spacing=0.08)
    values = "".join(f"<br>{data.name(k)} %{{customdata[{3 + k}]:.4g}}"
                     for k in range(len(data.objectives)))
    hover = f"<b>%{{customdata[1]}}</b> %{{customdata[2]}}{values}<br>%{{customdata[0]}}"
    on_front = set(data.front)
    groups = (("trial", GREY, 8, [i for i in range(len(data.points)) if i not in on_front]),
              ("Pareto frontier", RED, 11, data.front))
    for c, (a, b) in enumerate(pairs, start=1):
        for name, colour, size, indices in groups:
            order = sorted(indices, key=lambda i: data.points[i][a])
            xs, ys = _coordinates(data, a, b, order)
            # arrays, not lists: plotly checks a list element by element (seconds at 10,000)
            custom = np.empty((len(order), 3 + len(data.objectives)), dtype=object)
            for row, i in enumerate(order):
                custom[row] = [data.links[i], *data.labels[i], *data.points[i]]
            figure.add_trace(go.Scatter(
                x=np.asarray(xs, dtype=float), y=np.asarray(ys, dtype=float), name=name,
                legendgroup=name, showlegend=c == 1,
                mode="markers+lines" if colour == RED else "markers",
                marker={"color": colour, "size": size}, line={"color": colour, "width": 1},
                customdata=custom, hovertemplate=hover + "<extra></extra>"), 1, c)
        figure.update_xaxes(title_text=data.name(a), row=1, col=c)
        figure.update_yaxes(title_text="trial" if a == b else data.name(b), row=1, col=c)
    figure.update_layout(title=f"{title}<br><sub>hover a dot for its trial; click it for its "
                               "MLflow run page (below the plot)</sub>",
                         height=520, width=None if len(pairs) == 1 else 480 * len(pairs))
    return figure


def script(data: Pareto) -> str:
    """After the plot is drawn: each dot's run link made absolute (served by MLflow: into the
    UI serving the page, unless the tracking server's address is known), and a click puts it
    under the plot as a link."""
    return """
(function () {
  var plot = document.getElementById("{plot_id}");
  var served = location.href.replace(/^blob:/, "");
  var base = GUESSED && /^https?:/.test(served) ? new URL(served).origin : BASE;
  plot.data.forEach(function (trace, i) {
    Plotly.restyle(plot, {customdata: [trace.customdata.map(function (d) {
      return [base + "/" + d[0]].concat(d.slice(1));
    })]}, [i]);
  });
  var chosen = document.createElement("p");
  chosen.id = "chosen-run";
  chosen.style.fontFamily = "sans-serif";
  chosen.textContent = "Click a dot: the link to its MLflow run page appears here.";
  plot.after(chosen);
  plot.on("plotly_click", function (event) {
    var d = event.points[0].customdata;
    var link = document.createElement("a");
    link.href = d[0];
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = d[0];
    chosen.replaceChildren(d[1] + " " + d[2] + ": ", link);
  });
})();
""".replace("GUESSED", json.dumps(data.ui_is_guess)).replace("BASE", json.dumps(data.ui))


def picture(data: Pareto, title: str) -> Figure:
    pairs = data.pairs()
    fig = Figure(figsize=(5 * len(pairs), 4.2))
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    everyone = list(range(len(data.points)))
    for ax, (a, b) in zip(axes, pairs, strict=True):
        ax.scatter(*_coordinates(data, a, b, everyone), c=GREY, s=28, label="trial")
        order = sorted(data.front, key=lambda i: data.points[i][a])
        ax.plot(*_coordinates(data, a, b, order), "-", c=RED, lw=1)
        ax.scatter(*_coordinates(data, a, b, order), c=RED, s=46, label="Pareto frontier",
                   zorder=3)
        ax.set_xlabel(data.name(a))
        ax.set_ylabel("trial" if a == b else data.name(b))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
