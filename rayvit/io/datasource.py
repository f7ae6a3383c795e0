"""A Ray Data datasource that yields tiles of a mosaic.

One read task per output block: it reads the tiles whose contribution starts in that
block (each tile has exactly one such "home" block), so tasks come out in block order
and the driver can finish and write blocks as it goes. Tiles whose blocks are all
finished already (resume) are not read at all.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from ..grid import Block, Tiling
from .mosaic import Mosaic

ROWS_PER_BLOCK = 16  # tiles per Ray Data block: small enough to stream, big enough to batch


def read_tiles(mosaic: Mosaic, tiling: Tiling, tiles: list[tuple[int, int]]) -> Iterable:
    """Read ``tiles`` (``(iy, ix)`` pairs) as Ray Data blocks of up to ROWS_PER_BLOCK rows."""
    for start in range(0, len(tiles), ROWS_PER_BLOCK):
        chunk = tiles[start:start + ROWS_PER_BLOCK]
        pixels, valid = [], []
        for iy, ix in chunk:
            t = tiling.tile(iy, ix)
            data, ok = mosaic.read(t.row, t.col, t.rows, t.cols)
            # pixels outside the requested extent are padding: never valid
            ok[max(0, tiling.y.length - t.row):, :] = False
            ok[:, max(0, tiling.x.length - t.col):] = False
            pixels.append(data)
            valid.append(ok)
        yield BlockAccessor.batch_to_block({
            "iy": np.array([c[0] for c in chunk], dtype=np.int32),
            "ix": np.array([c[1] for c in chunk], dtype=np.int32),
            "pixels": np.stack(pixels),
            "valid": np.stack(valid),
        })


class TileDatasource(Datasource):
    def __init__(self, mosaic: Mosaic, tiling: Tiling, skip_blocks: frozenset = frozenset()):
        super().__init__()
        self.mosaic, self.tiling, self.skip_blocks = mosaic, tiling, skip_blocks

    def tiles_for(self, block: Block) -> list[tuple[int, int]]:
        """The home tiles of ``block`` that still feed at least one unfinished block."""
        rows, cols = self.tiling.home_tiles(block)
        return [(iy, ix) for iy in rows for ix in cols
                if any(b not in self.skip_blocks for b in self.tiling.tile_blocks(iy, ix))]

    def tile_bytes(self) -> int:
        t = self.tiling
        return t.y.size * t.x.size * (self.mosaic.count * np.dtype(self.mosaic.dtype).itemsize + 1)

    def estimate_inmemory_data_size(self) -> int:
        return self.tiling.n_tiles * self.tile_bytes()

    def get_name(self) -> str:
        return "RayvitTiles"

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        tasks = []
        mosaic, tiling = self.mosaic, self.tiling
        for block in tiling.blocks():
            tiles = self.tiles_for(block)
            if not tiles:
                continue
            meta = BlockMetadata(num_rows=len(tiles), size_bytes=len(tiles) * self.tile_bytes(),
                                 exec_stats=None, input_files=None)
            tasks.append(ReadTask(lambda tiles=tiles: read_tiles(mosaic, tiling, tiles), meta))
        return tasks
