"""TESSERA tiles in geotessera's local layout: windows read through their scales, georeferenced
by their landmask; a broken layout names what is missing."""

import os

import numpy as np
import pytest

from conftest import tessera_tile
from rayvit.errors import InputError
from rayvit.io.tessera import TesseraTile, landmask_of, tessera_path


def test_windows_are_codes_times_scales_and_scale_zero_is_no_data(tmp_path):
    path, by_hand = tessera_tile(tmp_path)
    assert tessera_path("tessera:" + path) == (path, True) and tessera_path(path) == (path, True)
    assert landmask_of(path) == str(tmp_path / "global_0.1_degree_tiff_all" / "grid_0.15_52.05.tiff")
    tile = TesseraTile.open(path, bands=[1, 2, 128])
    assert (tile.count, tile.grid.width, tile.grid.height) == (3, 36, 24) and "UTM zone 33N" in tile.grid.crs
    data, valid = tile.read(0, 0, 24, 36)
    ok = ~np.isnan(by_hand[0])
    np.testing.assert_array_equal(valid, ok)
    assert not valid[:3, :5].any() and valid.sum() == 24 * 36 - 15
    np.testing.assert_array_equal(data[:, ok], by_hand[[0, 1, 127]][:, ok])
    part, part_valid = tile.read(20, 30, 8, 8)                   # past the grid: invalid zeros
    np.testing.assert_array_equal(part[:, :4, :6], np.where(ok[20:, 30:], by_hand[[0, 1, 127], 20:, 30:], 0))
    assert not part_valid[4:].any() and (part[:, :, 6:] == 0).all()


def test_a_missing_landmask_is_named_with_the_layout(tmp_path):
    path, _ = tessera_tile(tmp_path)
    os.remove(landmask_of(path))
    with pytest.raises(InputError, match=r"landmask file .*grid_0.15_52.05.tiff' is missing.*global_0.1_degree_tiff_all"):
        TesseraTile.open(path)
