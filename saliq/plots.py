"""Pictures of a sweep's results: Figure 1 (saliency maps per configuration) and per-class
accuracy bars (the views, the Pareto plot among them, are `saliq.views`).

Drawn with matplotlib's `Figure` object API: no pyplot, no global backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["class_accuracy_bars", "figure1"]


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
