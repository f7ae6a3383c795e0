"""The read stage: each block task's input window, in one windowed read per source file.

A read task per block task returns the window's pixels in the raster's native dtype
(uint8/uint16/...) and its validity as uint8, as one Ray object that the device actor
receives without a copy (numpy arrays travel out of band). Nothing is converted to float
on the host and nothing is cut into tiles here: the device stage does both, on the device.
One read per block instead of one per tile: per-row overheads (rows, Arrow conversion,
short-lived workers) cost ~4 CPU-ms per tile when tiles travelled one by one.
"""

from __future__ import annotations

import time

import numpy as np

from ...grid import BlockTask, Tiling
from ...io.mosaic import Mosaic, close_cached


def read_window(mosaic: Mosaic, tiling: Tiling, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (bands, rows, cols) native dtype, valid (rows, cols) uint8)`` of a window
    of the target grid; pixels past the raster's extent (edge-tile padding) are invalid."""
    row, col, rows, cols = window
    pixels, valid = mosaic.read(row, col, rows, cols)
    valid[max(0, tiling.y.length - row):, :] = False
    valid[:, max(0, tiling.x.length - col):] = False
    return pixels, valid.view(np.uint8)


def read_block(mosaic: Mosaic, tiling: Tiling, task: BlockTask) -> tuple[np.ndarray, np.ndarray, float]:
    """The block's window, read, ``(pixels, valid, seconds)``; then this process's input
    handles are closed.

    Block windows overlap by the tiles' margin at most, so the input tiles GDAL decoded and
    cached for this window serve no later read task, and GDAL frees a file's cached tiles
    only when the file is closed: kept open, every worker that ran read tasks held up to
    ``GDAL_CACHEMAX`` (256 MB) of them, so memory grew with the area encoded.
    """
    t0 = time.perf_counter()
    try:
        pixels, valid = read_window(mosaic, tiling, task.window)
    finally:
        close_cached()
    return pixels, valid, time.perf_counter() - t0

