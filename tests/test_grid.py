"""Property-style tests of the tiling maths (rayvit.grid): pure, no I/O."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayvit.errors import TilingError
from rayvit.grid import Axis, Tiling, check_tiling, default_block_size


@st.composite
def axes(draw):
    f = draw(st.sampled_from([1, 2, 4, 14, 16]))
    size_f = draw(st.integers(1, 12))
    stride_f = draw(st.integers(1, size_f))
    length = draw(st.integers(1, 40 * f))
    return Axis(length, size_f * f, stride_f * f, f)


@settings(max_examples=300, deadline=None)
@given(axes())
def test_tiles_cover_the_extent_on_the_feature_grid(ax):
    offsets = [ax.offset(i) for i in range(ax.n_tiles)]
    assert all(o % ax.footprint == 0 for o in offsets)          # no resampling needed
    assert offsets[-1] < ax.length                                # no tile wholly outside
    assert offsets[-1] + ax.size >= ax.length                     # extent covered
    assert ax.n_tiles == 1 or offsets[-2] + ax.size < ax.length   # and no tile too many
    assert ax.feature_length == -(-ax.length // ax.footprint)


@settings(max_examples=300, deadline=None)
@given(axes())
def test_center_spans_partition_the_feature_axis(ax):
    start, stop = ax.spans(center=True)
    owner = np.zeros(ax.feature_length, dtype=int)
    for s, e in zip(start, stop):
        owner[s:e] += 1
    assert (owner == 1).all()
    # each tile keeps its central part: never further than the margin from its centre
    margin = (ax.tile_features - ax.stride_features) // 2
    for i, (s, e) in enumerate(zip(start, stop)):
        if 0 < i < ax.n_tiles - 1:
            assert s == ax.feature_offset(i) + margin and e - s == ax.stride_features


@settings(max_examples=200, deadline=None)
@given(axes())
def test_full_spans_are_whole_tiles(ax):
    start, stop = ax.spans(center=False)
    for i, (s, e) in enumerate(zip(start, stop)):
        assert s == ax.feature_offset(i)
        assert e == min(s + ax.tile_features, ax.feature_length)


@settings(max_examples=150, deadline=None)
@given(axes(), axes(), st.integers(1, 9), st.booleans())
def test_block_tasks_hold_exactly_the_tiles_that_touch_them(ay, ax, block, center):
    t = Tiling(ay, ax, block, center)
    touching = {}
    for iy in range(ay.n_tiles):
        for ix in range(ax.n_tiles):
            for key in t.tile_blocks(iy, ix):
                touching.setdefault(key, set()).add((iy, ix))
    encoded = 0
    for task in t.block_tasks():
        b = task.block
        tiles = {(iy, ix) for iy in task.tile_rows for ix in task.tile_cols}
        assert tiles == touching[(b.by, b.bx)] and t.expected_tiles(b) == len(tiles)
        row, col, rows, cols = task.window     # the window holds every tile, and no more
        assert row == t.tile(task.tile_rows[0], 0).row and col == t.tile(0, task.tile_cols[0]).col
        assert row + rows == t.tile(task.tile_rows[-1], 0).row + ay.size
        assert col + cols == t.tile(0, task.tile_cols[-1]).col + ax.size
        encoded += len(tiles)
    assert {(task.block.by, task.block.bx) for task in t.block_tasks()} == set(touching)
    unique = {tile for tiles in touching.values() for tile in tiles}
    assert t.contributing_tiles == len(unique)
    assert t.redundancy() == pytest.approx(encoded / len(unique) - 1)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 30))
def test_default_blocks_of_a_stride_multiple_encode_no_tile_twice(sy, sx, n):
    """Without overlap (stride = size), blocks of the default size hold whole tiles."""
    f = 16
    size = (sy * f, sx * f)
    t = Tiling.create(n * 97, n * 61, size, size, (f, f), default_block_size((sy, sx), 64), center=False)
    assert t.block_size % sy == 0 and t.block_size % sx == 0
    assert t.redundancy() == 0
    assert sum(task.n_tiles for task in t.block_tasks()) == t.n_tiles


def test_block_tasks_skip_finished_blocks():
    t = Tiling.create(200, 200, (32, 32), (32, 32), (16, 16), block_size=4, center=False)
    assert [(k.block.by, k.block.bx) for k in t.block_tasks(frozenset({(0, 0), (1, 2)}))] == [
        (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3), (3, 0), (3, 1),
        (3, 2), (3, 3)]


def test_blocks_tile_the_feature_grid():
    t = Tiling.create(1000, 700, (64, 64), (32, 32), (16, 16), block_size=7, center=True)
    cover = np.zeros(t.feature_shape, dtype=int)
    for b in t.blocks():
        cover[b.row:b.row + b.rows, b.col:b.col + b.cols] += 1
    assert (cover == 1).all()
    assert t.feature_shape == (63, 44)


@pytest.mark.parametrize("size,stride,footprint,message", [
    (8, 8, 16, "smaller than one model patch"),
    (230, 224, 16, "nearest valid sizes: 224, 240"),
    (224, 240, 16, "must be between 1 and the tile size 224"),
    (224, 100, 16, "nearest valid strides: 96, 112"),
])
def test_bad_tiling_names_the_nearest_valid_values(size, stride, footprint, message):
    with pytest.raises(TilingError, match=message):
        check_tiling(size, stride, footprint)


def test_non_square_tiles_have_per_axis_grids():
    t = Tiling.create(100, 300, (32, 64), (32, 32), (16, 16), block_size=4, center=True)
    assert t.tile_feature_shape == (2, 4)
    assert (t.y.n_tiles, t.x.n_tiles) == (4, 9)
