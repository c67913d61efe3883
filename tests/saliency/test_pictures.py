"""Saliency grids: a PNG sized by its rows."""

from __future__ import annotations

import numpy as np
from PIL import Image
from saliency_helpers import rand

from saliq.saliency.pictures import save_grid

# --- pictures ----------------------------------------------------------------------------


def test_save_grid_writes_a_png_sized_by_rows(tmp_path, fashion_small):
    images = fashion_small.denormalise(fashion_small.probe_x[:8])
    maps, ref = rand(8, 28, 28, seed=7), rand(8, 28, 28, seed=8)
    sizes = {}
    for rows in (2, 4, 6):
        path = save_grid(tmp_path / "sub" / f"grid{rows}.png", images, ref, maps,
                         fashion_small.probe_y[:8], fashion_small.classes, rows=rows,
                         title="w4a4", columns=("input", "FP", "w4a4"))
        assert path.is_file()
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as img:
            img.load()
            sizes[rows] = img.size
            assert np.asarray(img).std() > 0  # something was drawn
    widths = {w for w, _ in sizes.values()}
    assert len(widths) == 1
    # 2.0 inches a row at 110 dpi
    assert sizes[4][1] - sizes[2][1] == sizes[6][1] - sizes[4][1] == 440
