"""The write stage: tasks that turn the device stage's merged blocks into COGs.

Each task writes its block where the product lives (:class:`rayvit.io.cog.BlockWriter`) and
returns only the block's small record, with what the stages measured, and its part of the
report's view of the features (:class:`FeatureSample`); the driver appends records to the
manifest and never receives a feature array.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ...grid import Block, Tiling, nearest
from ...io.cog import BlockWriter


@dataclass(frozen=True)
class FeatureSample:
    """The report's view of a feature raster (:func:`rayvit.report.quicklook.read_small`'s
    decimation: ``bands`` of it, on a ``height`` x ``width`` grid), taken by the write tasks
    from the blocks they hold, so that the driver does not read the product back at commit
    (a 4,096-tile product's 32 bands re-read and decoded: ~0.3 CPU-ms per tile)."""

    rows: int               # the feature grid
    cols: int
    height: int             # the view
    width: int
    bands: tuple[int, ...]  # 0-based

    def part(self, block: Block, features: np.ndarray, valid: np.ndarray):
        """``(row, col, values (bands, h, w) float32 NaN where invalid)`` of the view under
        ``block`` (its ``features (D, rows, cols)``), or None."""
        ys, xs = nearest(self.rows, self.height), nearest(self.cols, self.width)
        inside_y = np.flatnonzero((ys >= block.row) & (ys < block.row + block.rows))
        inside_x = np.flatnonzero((xs >= block.col) & (xs < block.col + block.cols))
        if not len(inside_y) or not len(inside_x):
            return None
        y, x = ys[inside_y] - block.row, xs[inside_x] - block.col
        values = features[np.ix_(list(self.bands), y, x)].astype(np.float32)
        values[:, ~valid[np.ix_(y, x)].astype(bool)] = np.nan
        return int(inside_y[0]), int(inside_x[0]), values

    def assemble(self, parts) -> np.ma.MaskedArray:
        """The whole view from the blocks' parts, masked where no block had a valid pixel."""
        out = np.full((len(self.bands), self.height, self.width), np.nan, np.float32)
        for row, col, values in filter(None, parts):
            out[:, row:row + values.shape[1], col:col + values.shape[2]] = values
        return np.ma.masked_array(out, mask=np.isnan(out))     # masked_invalid copies: 0.2 s at 1 Mpx


def write_block(writer: BlockWriter, tiling: Tiling, encoded: dict, sample: FeatureSample | None = None) -> dict:
    """Write one block the device stage encoded (:meth:`.device.DeviceStage.encode`); its
    record plus ``tiles``, ``node``, the stage seconds and (with ``sample``) its ``sample``
    part."""
    t0 = time.perf_counter()
    block = tiling.block(encoded["by"], encoded["bx"])
    record = writer.write(block, encoded["features"], encoded["valid"])
    if sample is not None:
        record["sample"] = sample.part(block, encoded["features"], encoded["valid"])
    measured = {key: encoded[key] for key in ("tiles", "node", "read_s", "device_s", "model_load_s")}
    return {**record, **measured, "write_s": time.perf_counter() - t0}
