"""A Ray Data datasource that yields tiles of a mosaic.

Read tasks go block by block: each block's "home" tiles (the tiles whose contribution
starts in it; every tile has exactly one) are read by a few tasks in a row, so tiles come
out in block order and the driver can finish and write blocks as it goes. Tiles whose
blocks are all finished already (resume) are not read at all.

Each task reads one Ray block of ``rows_per_block`` tiles (one encoder batch; the last of
a block may be short): small units keep the actors evenly loaded to the end and the first
features arriving early (measured: 4 batches per task left one of two actors idle for ~2 s
at the end of a 1024-tile run). The dataset is read with ``override_num_blocks`` = the
task count: otherwise Ray Data splits blocks to reach its own parallelism target, the
encoder receives batches of 1-4 tiles, and each is padded to a full model batch
(measured: +67 % model work).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from ..grid import Block, Tiling
from .mosaic import Mosaic


def read_tiles(mosaic: Mosaic, tiling: Tiling, tiles: list[tuple[int, int]]) -> Iterable:
    """Read ``tiles`` (``(iy, ix)`` pairs) as one Ray Data block (one encoder batch)."""
    pixels, valid = [], []
    for iy, ix in tiles:
        t = tiling.tile(iy, ix)
        data, ok = mosaic.read(t.row, t.col, t.rows, t.cols)
        # pixels outside the requested extent are padding: never valid
        ok[max(0, tiling.y.length - t.row):, :] = False
        ok[:, max(0, tiling.x.length - t.col):] = False
        pixels.append(data)
        valid.append(ok)
    yield BlockAccessor.batch_to_block({
        "iy": np.array([c[0] for c in tiles], dtype=np.int32),
        "ix": np.array([c[1] for c in tiles], dtype=np.int32),
        "pixels": np.stack(pixels),
        "valid": np.stack(valid),
    })


class TileDatasource(Datasource):
    def __init__(self, mosaic: Mosaic, tiling: Tiling, skip_blocks: frozenset = frozenset(),
                 rows_per_block: int = 16):
        super().__init__()
        self.mosaic, self.tiling, self.skip_blocks = mosaic, tiling, skip_blocks
        self.rows_per_block = rows_per_block
        self._tasks = [chunk for block in tiling.blocks() for chunk in self._chunks(self.tiles_for(block))]

    def _chunks(self, tiles: list) -> list[list]:
        step = self.rows_per_block  # one encoder batch per read task
        return [tiles[i:i + step] for i in range(0, len(tiles), step)]

    @property
    def n_tiles(self) -> int:
        return sum(len(t) for t in self._tasks)

    @property
    def n_tasks(self) -> int:
        return len(self._tasks)

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
        for tiles in self._tasks:
            meta = BlockMetadata(num_rows=len(tiles), size_bytes=len(tiles) * self.tile_bytes(),
                                 exec_stats=None, input_files=None)
            tasks.append(ReadTask(lambda tiles=tiles: read_tiles(mosaic, tiling, tiles), meta))
        return tasks
