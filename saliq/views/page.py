"""How a view is written: an interactive page (plotly) and a picture (matplotlib), or, for a
view with nothing to show, both saying why in one line.

Pages are self-contained: plotly.js is inlined, because the MLflow UI shows an HTML artifact
in a sandboxed frame, and machines of a cluster may have no internet to fetch it from.
"""

from __future__ import annotations

import html
from pathlib import Path

from matplotlib.figure import Figure

__all__ = ["write_note", "write_page", "write_picture"]

CONFIG = {"displaylogo": False, "responsive": True}


def write_page(figure, path: Path, *, script: str | None = None) -> Path:
    """`figure` (a plotly Figure) as a self-contained HTML page; `script` runs after it is
    drawn, with `{plot_id}` standing for the plot's element id."""
    path.write_text(figure.to_html(include_plotlyjs=True, full_html=True, config=CONFIG,
                                   post_script=script), encoding="utf-8")
    return path


def write_picture(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def write_note(title: str, line: str, page: Path, picture: Path) -> tuple[Path, Path]:
    """The page and the picture of an empty view: its title and the one line why."""
    page.write_text(f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<body style='font-family:sans-serif'><h3>{html.escape(title)}</h3>"
                    f"<p class='empty-view'>{html.escape(line)}</p></body>", encoding="utf-8")
    fig = Figure(figsize=(8, 1.2))
    fig.text(0.02, 0.65, title, fontsize=11, weight="bold")
    fig.text(0.02, 0.25, line, fontsize=10)
    return page, write_picture(fig, picture)
