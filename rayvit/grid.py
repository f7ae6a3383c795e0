"""Tiling maths: tile offsets, the feature grid, overlap ownership and output blocks.

Pure functions and small frozen value types; no I/O. Everything is per axis, so
non-square tiles and non-square feature footprints come for free.

Vocabulary (all lengths are integers):

* input pixels: the target raster grid that tiles are cut from;
* footprint ``f``: input pixels covered by one feature pixel along an axis
  (the model's patch size, or ``size * patch / model_input`` when tiles are resized);
* a tile of ``size`` input pixels starts every ``stride`` input pixels at offsets
  ``0, stride, 2*stride, ...`` until the extent is covered; the last tiles are padded
  (masked), never shifted, so every offset is a multiple of ``f`` and every tile's
  features land on one global feature grid without resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np

from .errors import TilingError


def _nearest_multiples(value: int, step: int) -> list[int]:
    low = (value // step) * step
    return sorted({v for v in (low, low + step) if v > 0})


def check_tiling(size: int, stride: int, footprint: int, axis: str = "") -> None:
    """Raise :class:`TilingError` unless ``size``/``stride`` keep tiles on the feature grid."""
    where = f" ({axis})" if axis else ""
    if footprint < 1:
        raise TilingError(f"patch footprint must be >= 1 input pixel, got {footprint}{where}")
    if size < footprint:
        raise TilingError(
            f"tile size {size}{where} is smaller than one model patch ({footprint} input pixels); "
            f"use --size {footprint} or larger (a multiple of {footprint})."
        )
    if size % footprint:
        raise TilingError(
            f"tile size {size}{where} is not a multiple of the patch footprint ({footprint} input "
            f"pixels); nearest valid sizes: {', '.join(map(str, _nearest_multiples(size, footprint)))}."
        )
    if stride < 1 or stride > size:
        raise TilingError(
            f"stride {stride}{where} must be between 1 and the tile size {size} "
            f"(a stride larger than the tile leaves gaps); use --stride {size} or smaller."
        )
    if stride % footprint:
        raise TilingError(
            f"stride {stride}{where} is not a multiple of the patch footprint ({footprint} input "
            f"pixels), so tile features would fall between feature pixels; nearest valid strides: "
            f"{', '.join(str(v) for v in _nearest_multiples(stride, footprint) if v <= size)}."
        )


@dataclass(frozen=True, slots=True)
class Axis:
    """Tiling of one axis: ``length`` input pixels cut into tiles of ``size`` every ``stride``."""

    length: int
    size: int
    stride: int
    footprint: int

    def __post_init__(self) -> None:
        if self.length < 1:
            raise TilingError(f"cannot tile an empty extent (length {self.length} pixels)")
        check_tiling(self.size, self.stride, self.footprint)

    @property
    def n_tiles(self) -> int:
        return 1 + max(0, math.ceil((self.length - self.size) / self.stride))

    @property
    def feature_length(self) -> int:
        """Feature pixels along the axis: ``ceil(length / footprint)``."""
        return math.ceil(self.length / self.footprint)

    @property
    def tile_features(self) -> int:
        return self.size // self.footprint

    @property
    def stride_features(self) -> int:
        return self.stride // self.footprint

    def offset(self, i: int) -> int:
        """Input-pixel offset of tile ``i``."""
        return i * self.stride

    def feature_offset(self, i: int) -> int:
        return i * self.stride_features

    def spans(self, center: bool) -> tuple[np.ndarray, np.ndarray]:
        """Global feature-pixel ``[start, stop)`` each tile contributes, clipped to the grid.

        With ``center``, tile ``i`` keeps only its central ``stride`` part (the first tile
        also keeps its leading margin and the last its trailing one), so the spans
        partition the axis: every feature pixel belongs to exactly one tile.
        Cached: the driver asks for them once per tile it merges.
        """
        return _spans(self, center)

    def _compute_spans(self, center: bool) -> tuple[np.ndarray, np.ndarray]:
        i = np.arange(self.n_tiles, dtype=np.int64)
        start = i * self.stride_features
        stop = start + self.tile_features
        if center:
            margin = (self.tile_features - self.stride_features) // 2
            keep_start = start + margin
            keep_stop = keep_start + self.stride_features
            keep_start[0] = start[0]
            keep_stop[-1] = stop[-1]
            start, stop = keep_start, keep_stop
        start, stop = np.minimum(start, self.feature_length), np.minimum(stop, self.feature_length)
        start.flags.writeable = stop.flags.writeable = False  # shared through the cache
        return start, stop

    def tiles_touching(self, lo: int, hi: int, center: bool) -> range:
        """Indices of tiles whose span intersects feature pixels ``[lo, hi)``."""
        start, stop = self.spans(center)
        hit = np.nonzero((start < hi) & (stop > lo) & (stop > start))[0]
        return range(int(hit[0]), int(hit[-1]) + 1) if hit.size else range(0)

    def block_tiles(self, block_size: int, center: bool) -> tuple[range, ...]:
        """For each block along the axis, the tiles whose span intersects it (cached)."""
        return _block_tiles(self, block_size, center)

    def contributing(self, center: bool) -> int:
        """Tiles whose span is not empty."""
        start, stop = self.spans(center)
        return int((stop > start).sum())

    def n_blocks(self, block_size: int) -> int:
        return math.ceil(self.feature_length / block_size)


@lru_cache(maxsize=64)
def _block_tiles(axis: Axis, block_size: int, center: bool) -> tuple[range, ...]:
    return tuple(axis.tiles_touching(b * block_size, (b + 1) * block_size, center)
                 for b in range(axis.n_blocks(block_size)))


@lru_cache(maxsize=64)
def _spans(axis: Axis, center: bool) -> tuple[np.ndarray, np.ndarray]:
    return axis._compute_spans(center)


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile: its index on the tile grid and where it lies, in input and feature pixels."""

    iy: int
    ix: int
    row: int
    col: int
    rows: int
    cols: int

    @property
    def id(self) -> tuple[int, int]:
        return (self.iy, self.ix)


@dataclass(frozen=True, slots=True)
class Block:
    """An output block: a rectangle of the feature grid written as one file."""

    by: int
    bx: int
    row: int
    col: int
    rows: int
    cols: int

    @property
    def name(self) -> str:
        return f"block_{self.by:05d}_{self.bx:05d}"


@dataclass(frozen=True, slots=True)
class BlockTask:
    """The unit of work: one output block, the tiles that touch it (index ranges, in rank
    order) and the input window those tiles cover, ``(row, col, rows, cols)`` in input
    pixels (it may reach past the raster: edge tiles are padded, never shifted)."""

    block: Block
    tile_rows: range
    tile_cols: range
    window: tuple[int, int, int, int]

    @property
    def n_tiles(self) -> int:
        return len(self.tile_rows) * len(self.tile_cols)


def default_block_size(stride_features: tuple[int, int], target: int = 128) -> int:
    """The largest multiple of both strides (in feature pixels) up to ``target``, or their
    least common multiple when that is larger: block edges then fall on tile edges, so
    without overlap no tile straddles two blocks (and none is encoded twice).

    128 (e.g. 126 = 9 x 9 tiles of 224 px at patch 16): blocks of 324 tiles (target 256) took
    ~12 s on a 1-thread CPU actor, so the last block left one of two actors idle and the run
    used 156 of its 185 CPU-seconds (4096 tiles, vit_tiny); a block is still large next to its
    per-task costs (one read task, one write task)."""
    step = math.lcm(*stride_features)
    return max(1, target // step) * step


@dataclass(frozen=True, slots=True)
class Tiling:
    """The whole plan geometry: two axes plus the output block size (in feature pixels)."""

    y: Axis
    x: Axis
    block_size: int
    center: bool

    @classmethod
    def create(
        cls,
        height: int,
        width: int,
        size: tuple[int, int],
        stride: tuple[int, int],
        footprint: tuple[int, int],
        block_size: int | None,
        center: bool,
    ) -> "Tiling":
        """``block_size`` None: :func:`default_block_size` for the strides."""
        for name, (s, t, f) in {"rows": (size[0], stride[0], footprint[0]),
                                "columns": (size[1], stride[1], footprint[1])}.items():
            check_tiling(s, t, f, name)
        if block_size is None:
            block_size = default_block_size((stride[0] // footprint[0], stride[1] // footprint[1]))
        if block_size < 1:
            raise TilingError(f"block size must be >= 1 feature pixel, got {block_size}")
        return cls(Axis(height, size[0], stride[0], footprint[0]),
                   Axis(width, size[1], stride[1], footprint[1]), block_size, center)

    @property
    def n_tiles(self) -> int:
        return self.y.n_tiles * self.x.n_tiles

    @property
    def feature_shape(self) -> tuple[int, int]:
        return (self.y.feature_length, self.x.feature_length)

    @property
    def tile_feature_shape(self) -> tuple[int, int]:
        return (self.y.tile_features, self.x.tile_features)

    def tile(self, iy: int, ix: int) -> Tile:
        return Tile(iy, ix, self.y.offset(iy), self.x.offset(ix), self.y.size, self.x.size)

    def tile_index(self, iy: int, ix: int) -> int:
        """Row-major rank of a tile: the order that ``first``/``last`` merges refer to."""
        return iy * self.x.n_tiles + ix

    def tile_span(self, iy: int, ix: int) -> tuple[int, int, int, int]:
        """Global feature window ``(row0, row1, col0, col1)`` the tile contributes."""
        ys, ye = self.y.spans(self.center)
        xs, xe = self.x.spans(self.center)
        return int(ys[iy]), int(ye[iy]), int(xs[ix]), int(xe[ix])

    def block(self, by: int, bx: int) -> Block:
        b = self.block_size
        row, col = by * b, bx * b
        return Block(by, bx, row, col,
                     min(b, self.y.feature_length - row), min(b, self.x.feature_length - col))

    def blocks(self) -> Iterator[Block]:
        for by in range(self.y.n_blocks(self.block_size)):
            for bx in range(self.x.n_blocks(self.block_size)):
                yield self.block(by, bx)

    def block_tiles(self, block: Block) -> tuple[range, range]:
        """Tile index ranges (rows, cols) whose contributions intersect ``block``."""
        return (self.y.block_tiles(self.block_size, self.center)[block.by],
                self.x.block_tiles(self.block_size, self.center)[block.bx])

    def expected_tiles(self, block: Block) -> int:
        ry, rx = self.block_tiles(block)
        return len(ry) * len(rx)

    def block_task(self, block: Block) -> BlockTask:
        ry, rx = self.block_tiles(block)
        if not ry or not rx:
            return BlockTask(block, ry, rx, (0, 0, 0, 0))
        row, col = self.y.offset(ry.start), self.x.offset(rx.start)
        rows = self.y.offset(ry.stop - 1) + self.y.size - row
        cols = self.x.offset(rx.stop - 1) + self.x.size - col
        return BlockTask(block, ry, rx, (row, col, rows, cols))

    def block_tasks(self, skip: frozenset = frozenset()) -> list[BlockTask]:
        """One task per block that some tile touches, except the ``(by, bx)`` in ``skip``."""
        return [task for task in map(self.block_task, self.blocks())
                if task.n_tiles and (task.block.by, task.block.bx) not in skip]

    @property
    def contributing_tiles(self) -> int:
        """Tiles whose span is not empty: the tiles that are encoded at least once."""
        return self.y.contributing(self.center) * self.x.contributing(self.center)

    def redundancy(self) -> float:
        """Extra encodings from tiles that straddle blocks: ``sum(block tiles) / tiles - 1``
        (0 when block edges fall on tile edges)."""
        per_axis = [sum(map(len, axis.block_tiles(self.block_size, self.center)))
                    / max(1, axis.contributing(self.center)) for axis in (self.y, self.x)]
        return per_axis[0] * per_axis[1] - 1.0

    def tile_blocks(self, iy: int, ix: int) -> list[tuple[int, int]]:
        """Blocks that tile ``(iy, ix)`` contributes to."""
        r0, r1, c0, c1 = self.tile_span(iy, ix)
        if r1 <= r0 or c1 <= c0:
            return []
        b = self.block_size
        return [(by, bx) for by in range(r0 // b, (r1 - 1) // b + 1)
                for bx in range(c0 // b, (c1 - 1) // b + 1)]


def nearest(n: int, small: int) -> np.ndarray:
    """The source index of each of ``small`` pixels decimated from ``n`` by nearest neighbour,
    as GDAL's decimated reads pick them (the pixel under each small pixel's centre; a centre
    on a pixel edge rounds up, as GDAL's 1e-10 does)."""
    return np.minimum(((np.arange(small) + 0.5) * (n / small) + 1e-10).astype(np.int64), n - 1)
