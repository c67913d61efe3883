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


def test_mosaic_places_each_tile_exactly(fashion_small):
    from matplotlib import colormaps

    from saliq.saliency.pictures import mosaic

    images = fashion_small.denormalise(fashion_small.probe_x[:3])
    ref, maps = rand(3, 28, 28, seed=1), rand(3, 28, 28, seed=2)
    picture = mosaic(images, ref, maps, columns=2, scale=3)
    tile = 28 * 3
    assert picture.dtype == np.uint8
    assert picture.shape == (3 * tile + 2 * 3, 2 * tile + 3, 3)  # 3 rows, 2 images, 3 px gaps
    assert (picture[:, tile:tile + 3] == 255).all()  # the gap between the images is white
    # row 2 (the maps), image 1: maps[1] through inferno, each pixel a 3x3 block
    inferno = (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round()
    expected = inferno[(maps[1].numpy().clip(0, 1) * 255).round().astype(int)]
    block = picture[2 * (tile + 3):, tile + 3:][::3, ::3]
    assert np.array_equal(block, expected.astype(np.uint8))
    gray = (images[0, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(picture[:tile:3, :tile:3, 0], gray)  # the input, as gray
    assert mosaic(images, ref, None).shape[0] == 2 * 28 * 4 + 4  # no map: two rows
