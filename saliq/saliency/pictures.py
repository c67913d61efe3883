"""Pictures of saliency maps: one row per probe image, input beside its maps.

Drawn with matplotlib's `Figure` object API: no pyplot, no global backend, so a library
call never changes how the caller's program plots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from saliq.saliency.similarity import spearman

__all__ = ["grid_figure", "render_rgba", "save_grid"]


def grid_figure(
    images: torch.Tensor,
    reference_maps: torch.Tensor,
    maps: torch.Tensor | None,
    labels: torch.Tensor,
    class_names: tuple[str, ...],
    *,
    title: str = "",
    columns: tuple[str, ...] = ("input", "FP map", "quantized map"),
    rows: int = 8,
) -> Figure:
    """input | reference map | map for the first `rows` images, with labels and the per-image
    Spearman agreement under the map; `maps=None` draws input | reference map only."""
    rows = min(rows, len(images))
    ncols = 2 if maps is None else 3
    per_image = None if maps is None else spearman(maps[:rows], reference_maps[:rows]).tolist()
    fig = Figure(figsize=(2.2 * ncols, 2.0 * rows + 0.6))
    axes = fig.subplots(rows, ncols, squeeze=False)
    imgs = images[:rows].detach().float().cpu().clamp(0, 1)
    for r in range(rows):
        img = imgs[r].permute(1, 2, 0).numpy()
        panels = [(img.squeeze(-1) if img.shape[-1] == 1 else img, "gray"),
                  (reference_maps[r].float().cpu().numpy(), "inferno")]
        if maps is not None:
            panels.append((maps[r].float().cpu().numpy(), "inferno"))
        for c, (data, cmap) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(data, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=10)
        axes[r][0].set_ylabel(class_names[int(labels[r])], fontsize=9)
        if per_image is not None:
            axes[r][2].set_xlabel(f"spearman {per_image[r]:.2f}", fontsize=8)
    height = fig.get_figheight()
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.45 if title else 0.1) / height))
    return fig


def save_grid(path: str | Path, images: torch.Tensor, reference_maps: torch.Tensor,
              maps: torch.Tensor | None, labels: torch.Tensor, class_names: tuple[str, ...],
              **options) -> Path:
    """`grid_figure` written to a PNG at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_figure(images, reference_maps, maps, labels, class_names, **options).savefig(
        path, dpi=110)
    return path


def render_rgba(fig: Figure, dpi: int = 80) -> np.ndarray:
    """The figure as an (H, W, 4) uint8 RGBA array (for MLflow's image time series)."""
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()
