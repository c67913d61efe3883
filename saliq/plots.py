"""Pictures of a sweep's results: the Pareto plot (PNG and an interactive page), Figure 1
(saliency maps per configuration), per-class accuracy bars.

Drawn with matplotlib's `Figure` object API: no pyplot, no global backend.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["class_accuracy_bars", "figure1", "pareto_plot"]


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(0, 0)] if n == 1 else list(itertools.combinations(range(n), 2))


def pareto_plot(points: Sequence[Sequence[float]], front: Sequence[int],
                objectives: Sequence[tuple[str, str]], labels: Sequence[str],
                png: str | Path, page: str | Path, *, title: str = "") -> tuple[Path, Path]:
    """Every trial as a dot, the frontier highlighted, one panel per pair of objectives.

    The HTML page is self-contained (inline SVG): hovering a dot shows its trial and values.
    """
    pairs = _pairs(len(objectives))
    on_front = set(front)
    fig = Figure(figsize=(5 * len(pairs), 4.2))
    axes = fig.subplots(1, len(pairs), squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        ys = [p[b] for p in points] if a != b else list(range(len(points)))
        ax.scatter([p[a] for p in points], ys, c="#9aa5b1", s=28, label="trial")
        fx = [points[i][a] for i in front]
        fy = [ys[i] for i in front]
        order = sorted(range(len(fx)), key=lambda k: fx[k])
        ax.plot([fx[k] for k in order], [fy[k] for k in order], "-", c="#d1495b", lw=1)
        ax.scatter(fx, fy, c="#d1495b", s=46, label="Pareto frontier", zorder=3)
        ax.set_xlabel(f"{objectives[a][0]} ({objectives[a][1]})")
        ax.set_ylabel("trial" if a == b else f"{objectives[b][0]} ({objectives[b][1]})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)

    page = Path(page)
    page.write_text(_html(points, on_front, objectives, labels, pairs, title), encoding="utf-8")
    return png, page


def _html(points, on_front, objectives, labels, pairs, title) -> str:
    width, height, pad = 460, 360, 48
    panels = []
    for a, b in pairs:
        xs = [p[a] for p in points]
        ys = [p[b] for p in points] if a != b else list(range(len(points)))

        def scale(v, lo, hi, size):
            return pad + (v - lo) / ((hi - lo) or 1.0) * (size - 2 * pad)

        x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
        dots = []
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            cx, cy = scale(x, x_lo, x_hi, width), height - scale(y, y_lo, y_hi, height)
            values = ", ".join(f"{name} {p:.4g}" for (name, _), p in
                               zip(objectives, points[i], strict=True))
            tip = html.escape(f"{labels[i]}: {values}" + (" (frontier)" if i in on_front else ""))
            color = "#d1495b" if i in on_front else "#9aa5b1"
            dots.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{6 if i in on_front else 4}" '
                        f'fill="{color}"><title>{tip}</title></circle>')
        x_name = html.escape(f"{objectives[a][0]} ({objectives[a][1]})")
        y_name = "trial" if a == b else html.escape(f"{objectives[b][0]} ({objectives[b][1]})")
        panels.append(
            f'<svg width="{width}" height="{height}" style="border:1px solid #ddd;margin:6px">'
            f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">{x_name} '
            f'[{x_lo:.4g} .. {x_hi:.4g}]</text>'
            f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
            f'text-anchor="middle">{y_name} [{y_lo:.4g} .. {y_hi:.4g}]</text>'
            + "".join(dots) + "</svg>")
    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<body style='font-family:sans-serif'><h3>{html.escape(title)}</h3>"
            "<p>Hover a dot for its trial; red dots are the Pareto frontier.</p>"
            + "".join(panels) + "</body>")


def figure1(panels: list[tuple[str, dict]], class_names: Sequence[str], path: Path,
            title: str, columns: int = 8) -> Path:
    """Rows: input, FP map, the controls' maps (the ceiling's, the first floor seed's) where
    the trials saved them, then one row per configuration's map; columns: probe images."""
    first = panels[0][1]
    n = min(columns, len(first["images"]))
    rows = [("input", first["images"], "gray"), ("FP reference", first["fp_maps"], "inferno")]
    if "ceiling_maps" in first:
        rows.append(("ceiling (FP, trained on)", first["ceiling_maps"], "inferno"))
    if "floor_maps" in first:
        rows.append(("floor (FP, seed + 1)", first["floor_maps"][0], "inferno"))
    rows += [(label, maps["maps"], "inferno") for label, maps in panels]
    fig = Figure(figsize=(1.45 * n + 1.2, 1.5 * len(rows) + 0.5))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (label, stack, cmap) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            img = np.asarray(stack[c], dtype=np.float32)
            if img.ndim == 3:  # (C, H, W) image
                img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(class_names[int(first["labels"][c])], fontsize=8)
            if c == 0:
                ax.set_ylabel(label.replace(", ", ",\n"), fontsize=8)  # one part a line
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def class_accuracy_bars(bars: Sequence[tuple[str, Sequence[float], float]],
                        class_names: Sequence[str], title: str, path: Path) -> Path:
    """Per-class accuracy for each configuration (`(label, per-class means, worst class)`):
    who pays for quantization."""
    width = 0.8 / max(len(bars), 1)
    fig = Figure(figsize=(max(8, 0.9 * len(class_names) + 2), 4.2))
    ax = fig.subplots()
    for i, (label, means, worst) in enumerate(bars):
        xs = [c + (i - (len(bars) - 1) / 2) * width for c in range(len(class_names))]
        ax.bar(xs, means, width, label=f"{label} (worst {worst:.3f})")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
