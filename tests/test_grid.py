"""Property-style tests of the tiling maths (rayvit.grid): pure, no I/O."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayvit.errors import TilingError
from rayvit.grid import Axis, Tiling, check_tiling


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
def test_blocks_expect_exactly_the_tiles_that_touch_them(ay, ax, block, center):
    t = Tiling(ay, ax, block, center)
    touching = {}
    homes = {}
    for iy in range(ay.n_tiles):
        for ix in range(ax.n_tiles):
            for key in t.tile_blocks(iy, ix):
                touching[key] = touching.get(key, 0) + 1
    for b in t.blocks():
        assert t.expected_tiles(b) == touching.get((b.by, b.bx), 0)
        rows, cols = t.home_tiles(b)
        for iy in rows:
            for ix in cols:
                homes[(iy, ix)] = homes.get((iy, ix), 0) + 1
    # every tile that contributes anything is read exactly once (by its home block)
    contributing = {(iy, ix) for iy in range(ay.n_tiles) for ix in range(ax.n_tiles)
                    if t.tile_blocks(iy, ix)}
    assert set(homes) == contributing and set(homes.values()) <= {1}


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
