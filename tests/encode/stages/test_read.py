"""The read stage in process: a block task's result is its window of the mosaic, in the
raster's native dtype, padding invalid; and the read leaves no input file open (nor GDAL's
cached tiles of it) in the worker. Each block's read also samples its part of the report's
input imagery view, and the parts make the whole view."""

import numpy as np

from rayvit.encode.stages.read import read_block
from rayvit.grid import Tiling
from rayvit.io import mosaic as mosaic_io
from rayvit.io.mosaic import open_mosaic
from conftest import cut_into_four, seeded_image


def test_a_block_read_is_its_window_native_dtype_and_the_inputs_are_closed_after(tmp_path):
    data = seeded_image((3, 70, 90), seed=4, high=60000, dtype="uint16")
    data[:, 10:14, 20:30] = 0                                  # nodata
    mosaic = open_mosaic(cut_into_four(tmp_path, data, nodata=0))
    tiling = Tiling.create(70, 90, (16, 16), (16, 16), (4, 4), block_size=8, center=True)
    for task in tiling.block_tasks():
        (pixels, valid, seconds), part = read_block(mosaic, tiling, task)
        assert part is None                                    # no preview asked for
        assert mosaic_io._OPEN == {} and mosaic_io._WARPED == {}
        r, c, rows, cols = task.window
        assert pixels.dtype == np.uint16 and valid.dtype == np.uint8 and seconds > 0
        assert pixels.shape == (3, rows, cols)
        inside = data[:, r:r + rows, c:c + cols]
        h, w = inside.shape[1:]
        expected = np.zeros((rows, cols), np.uint8)
        expected[:h, :w] = (inside != 0).all(axis=0)          # past the raster: padding, invalid
        np.testing.assert_array_equal(valid, expected)
        np.testing.assert_array_equal(pixels[:, :h, :w], np.where(expected[:h, :w], inside, 0))


def test_the_blocks_preview_parts_make_the_whole_imagery_view(tmp_path):
    """Every view pixel comes from exactly one block's read: the pixel of the input under its
    centre (nearest neighbour), invalid where the input is nodata or absent."""
    from affine import Affine

    from rayvit.encode.stages.read import Preview
    from rayvit.report.quicklook import view_grid

    data = seeded_image((3, 70, 90), seed=4, high=60000, dtype="uint16")
    data[:, 10:14, 20:30] = 0
    mosaic = open_mosaic(cut_into_four(tmp_path, data, nodata=0))
    tiling = Tiling.create(70, 90, (16, 16), (16, 16), (4, 4), block_size=3, center=True)
    g = mosaic.grid.affine
    features = (g.a * 4, 0.0, g.c, 0.0, g.e * 4, g.f)          # patch 4: one feature per 4 x 4 px
    fw, fh = -(-90 // 4), -(-70 // 4)
    view, h, w = view_grid(features, fw, fh)
    preview = Preview(tuple(view)[:6], h, w, features, tuple(g)[:6], (2, 0, 1))
    parts = [read_block(mosaic, tiling, task, preview)[1] for task in tiling.block_tasks()]
    bands, valid = preview.assemble(parts)
    cols = np.floor(((np.arange(w) + 0.5) * view.a) / g.a).astype(int)
    rows = np.floor(((np.arange(h) + 0.5) * view.e) / g.e).astype(int)
    inside = (rows < 70)[:, None] & (cols < 90)[None, :]
    picked = data[np.ix_([2, 0, 1], np.minimum(rows, 69), np.minimum(cols, 89))]
    expected = inside & (picked != 0).all(axis=0)
    assert isinstance(view, Affine) and (h, w) == (fh * 8, fw * 8)
    np.testing.assert_array_equal(valid, expected)
    np.testing.assert_array_equal(bands[:, expected], picked[:, expected])
    assert (bands[:, ~valid] == 0).all()
