"""The read stage in process: a block task's result is its window of the mosaic, in the
raster's native dtype, padding invalid; and the read leaves no input file open (nor GDAL's
cached tiles of it) in the worker."""

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
        pixels, valid, seconds = read_block(mosaic, tiling, task)
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
