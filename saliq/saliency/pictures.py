"""Pictures of saliency maps: one row per probe image, input beside its maps.

Drawn with matplotlib's `Figure` object API: no pyplot, no global backend, so a library
call never changes how the caller's program plots. `mosaic` is the same picture on its side,
without text, composed as an array (no figure at all): cheap enough for every QAT epoch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from saliq.saliency.similarity import spearman

__all__ = ["grid_figure", "mosaic", "render_rgba", "save_grid"]


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


def _colour(values: np.ndarray, cmap: str) -> np.ndarray:
    """(..., H, W) values in [0, 1] -> (..., H, W, 3) uint8 through the colormap's 256 colours."""
    table = (colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return table[(np.clip(values, 0, 1) * 255).round().astype(np.intp)]


def mosaic(images: torch.Tensor, reference_maps: torch.Tensor, maps: torch.Tensor | None, *,
           columns: int = 8, scale: int = 4) -> np.ndarray:
    """The inputs, their reference maps and their maps as three rows of one (H, W, 3) uint8
    picture, a column per probe image (the first `columns`), each pixel a `scale` x `scale`
    block, tiles `scale` pixels apart on white; no labels (the final grid has them). Wider
    than high, as MLflow's image cards show best. `maps=None`: inputs and reference maps."""
    n = min(columns, len(images))
    imgs = images[:n].detach().float().cpu().clamp(0, 1).numpy()  # (N, C, H, W)
    inputs = (np.repeat(imgs, 3, 1) if imgs.shape[1] == 1 else imgs).transpose(0, 2, 3, 1)
    rows = [(inputs * 255).round().astype(np.uint8),
            _colour(reference_maps[:n].float().cpu().numpy(), "inferno")]
    if maps is not None:
        rows.append(_colour(maps[:n].float().cpu().numpy(), "inferno"))
    tiles = np.stack(rows).repeat(scale, 2).repeat(scale, 3)  # (R, N, H, W, 3)
    r, k, h, w, _ = tiles.shape
    picture = np.full((r * (h + scale) - scale, k * (w + scale) - scale, 3), 255, np.uint8)
    for i in range(r):
        for j in range(k):
            picture[i * (h + scale):i * (h + scale) + h, j * (w + scale):j * (w + scale) + w] = (
                tiles[i, j])
    return picture
