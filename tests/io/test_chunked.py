"""Zarr products in process: the store's skeleton, one shard per block written by the block's
writer alone, and windows read back as the analysis stages read rasters."""

import os

import numpy as np
import pytest
from conftest import tessera_store

from rayvit.errors import InputError
from rayvit.grid import Block
from rayvit.io import chunked, quantize
from rayvit.io.storage import sha256_file

import zarr
T = (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)


def test_inner_chunks_divide_the_block():
    assert [chunked.inner_side(n) for n in (126, 128, 16, 7, 130)] == [63, 64, 16, 7, 26]


def test_each_block_is_one_shard_and_windows_read_back_with_nodata_and_bands(tmp_path):
    store = str(tmp_path / "f.zarr")
    names = [f"feature_{i:04d}" for i in range(1, 6)]
    chunked.create(store, "EPSG:32633", T, width=23, height=17, names=names, dtype="float16", block_size=8)
    data = np.random.default_rng(0).normal(size=(5, 17, 23)).astype(np.float16)
    data[:, 3:5, 6:9] = np.nan                                   # no data inside a block
    writer = chunked.ZarrBlockWriter(store, "f.zarr", "float16", 8, chunked.inner_side(8))
    records = []
    for by, r in enumerate(range(0, 17, 8)):
        for bx, c in enumerate(range(0, 23, 8)):
            block = Block(by, bx, r, c, min(8, 17 - r), min(8, 23 - c))
            part = data[:, r:r + block.rows, c:c + block.cols]
            valid = ~np.isnan(part).any(axis=0)
            if (by, bx) == (2, 2):
                valid[:] = False                                 # a block without data: no shard
            records.append(writer.write(block, part, valid))
            shard = os.path.join(store, chunked.shard_file(block))
            assert os.path.exists(shard) == valid.any()
            if valid.any():
                assert records[-1] == {"by": by, "bx": bx, "file": f"f.zarr/{chunked.shard_file(block)}",
                                       "data": True, "sha256": sha256_file(shard)}
    shards = sum(len(files) for _, _, files in os.walk(os.path.join(store, "features", "c")))
    assert shards == 3 * 3 - 1
    expected = data.copy()
    expected[:, 16:, 16:] = np.nan
    raster = chunked.ZarrRaster.open(store, bands=[2, 5])
    assert (raster.count, raster.stored, raster.grid.width, raster.grid.height) == (2, "float16", 23, 17)
    assert raster.grid.transform == T and "UTM zone 33N" in raster.grid.crs
    got, valid = raster.read(12, 20, 8, 8)                       # across blocks, past the grid
    want = expected[[1, 4], 12:17, 20:23].astype(np.float32)
    ok = ~np.isnan(want).any(axis=0)
    assert got.shape == (2, 8, 8) and valid.shape == (8, 8)
    np.testing.assert_array_equal(valid[:5, :3], ok)
    assert not valid[5:].any() and not valid[:, 3:].any()
    np.testing.assert_array_equal(got[:, :5, :3], np.where(ok, want, 0))
    assert (got[:, 5:] == 0).all()


@pytest.mark.parametrize("dtype", ["float16", "float32", "int8"])
def test_shards_encoded_by_rayvit_are_the_bytes_zarr_python_writes(tmp_path, dtype):
    """Blocks of 126 px in inner chunks of 63 (4 per shard), edge shards partial, a nodata hole:
    each shard rayvit encodes is byte for byte the one zarr-python writes for the same data
    (int8: the codes and the per-pixel scales of float blocks, both arrays' shards)."""
    per_pixel = dtype == "int8"
    data = np.random.default_rng(1).normal(size=(3, 150, 200)).astype("float32" if per_pixel else dtype)
    data[:, 10:20, 30:90] = np.nan
    valid = ~np.isnan(data).any(axis=0)
    ours, theirs = str(tmp_path / "ours.zarr"), str(tmp_path / "theirs.zarr")
    for store in (ours, theirs):
        chunked.create(store, "EPSG:32633", T, width=200, height=150, names=["a", "b", "c"], dtype=dtype,
                       block_size=126, per_pixel=per_pixel)
    if per_pixel:
        codes, scales = quantize.per_pixel(data, valid)
        zarr.open_array(theirs + "/features", mode="r+")[:] = codes
        zarr.open_array(theirs + "/scales", mode="r+")[:] = scales
    else:
        zarr.open_array(theirs + "/features", mode="r+")[:] = data
    writer = chunked.ZarrBlockWriter(ours, "ours.zarr", "float32" if per_pixel else dtype, 126, 63,
                                     per_pixel=per_pixel)
    for by, r in enumerate((0, 126)):
        for bx, c in enumerate((0, 126)):
            block = Block(by, bx, r, c, min(126, 150 - r), min(126, 200 - c))
            window = (slice(r, r + block.rows), slice(c, c + block.cols))
            writer.write(block, data[(slice(None), *window)], valid[window] if per_pixel else
                         np.ones((block.rows, block.cols), bool))
            names = [chunked.shard_file(block)] + ([chunked.shard_file(block, "scales", band=False)] if per_pixel else [])
            for name in names:
                mine, zarrs = (open(os.path.join(s, name), "rb").read() for s in (ours, theirs))
                assert mine == zarrs, (name, by, bx)
    raster = chunked.ZarrRaster.open(ours)
    assert raster.scales == ("scales" if per_pixel else "")
    got, ok = raster.read(0, 0, 150, 200)
    np.testing.assert_array_equal(ok, valid)
    want = quantize.per_pixel_values(codes, scales)[0] if per_pixel else data.astype(np.float32)
    np.testing.assert_array_equal(got[:, valid], want[:, valid])


def test_a_store_without_features_is_a_clear_error(tmp_path):
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array("x", shape=(3,), dtype="int8")
    with pytest.raises(InputError, match="other.zarr' holds no georeferenced \\(band, y, x\\) variables"):
        chunked.ZarrRaster.open(str(tmp_path / "other.zarr"))
    zarr.open_group(str(tmp_path / "nogeo.zarr"), mode="w").create_array("emb", shape=(2, 3, 3), dtype="f4",
                                                                          dimension_names=("band", "y", "x"),
                                                                          attributes={"grid_mapping": "crs"})
    with pytest.raises(InputError, match="nogeo.zarr' is not a georeferenced Zarr raster"):
        chunked.ZarrRaster.open(str(tmp_path / "nogeo.zarr"))


def test_any_zarr_written_by_xarray_with_a_crs_is_read_as_a_raster(tmp_path):
    """A (band, y, x) variable that rioxarray georeferenced and xarray wrote (another name than
    rayvit's, its own grid mapping): read with its grid, NaN as no data."""
    import rioxarray  # noqa: F401
    import xarray as xr
    from rasterio.transform import from_origin

    data = np.random.default_rng(0).normal(size=(5, 30, 40)).astype("float32")
    data[:, :3, :4] = np.nan
    da = xr.DataArray(data, dims=("band", "y", "x"), name="emb",
                      coords={"band": np.arange(1, 6), "y": 4000000 - (np.arange(30) + 0.5) * 10,
                              "x": 500000 + (np.arange(40) + 0.5) * 10})
    da.rio.write_crs("EPSG:32633").rio.write_transform(from_origin(500000, 4000000, 10, 10)).to_dataset() \
        .to_zarr(tmp_path / "any.zarr", zarr_format=3)
    raster = chunked.ZarrRaster.open(str(tmp_path / "any.zarr"), bands=[2, 4])
    assert raster.array == "emb" and raster.grid.transform == T and raster.grid.width == 40
    got, valid = raster.read(0, 0, 30, 40)
    np.testing.assert_array_equal(valid, ~np.isnan(data[0]))
    np.testing.assert_array_equal(got[:, valid], data[[1, 3]][:, valid])


def test_a_tessera_zarr_store_is_read_through_its_per_pixel_scales_one_year_at_a_time(tmp_path):
    """TESSERA's Zarr layout (a UTM zone group, (time, band, y, x) int8 codes, (time, y, x)
    scales, the geoemb per_pixel_scale declaration on the root, proj:code and
    spatial:transform on the zone): ``STORE@YEAR`` is that year's floats, computed by hand,
    with both of TESSERA's no-data sentinels (NaN water, +inf not yet filled) as no data."""
    store, by_hand = tessera_store(tmp_path)
    for path in (store + "@2024", store + "/utm33@2024"):       # its one zone, found or named
        raster = chunked.ZarrRaster.open(path)
        assert raster.path == store + "/utm33" and (raster.array, raster.scales) == ("embeddings", "scales")
        assert raster.times == ("2023", "2024") and raster.time == 1 and raster.count == 128
        assert raster.grid.crs == "EPSG:32633" and raster.grid.transform == T and (raster.grid.width, raster.grid.height) == (36, 24)
        got, valid = raster.read(0, 0, 24, 36)
        np.testing.assert_array_equal(valid, ~np.isnan(by_hand[0]))
        assert not valid[:3, :5].any() and valid.sum() == 24 * 36 - 15
        np.testing.assert_array_equal(got[:, valid], by_hand[:, valid])
    both = chunked.ZarrRaster.open(store, bands=[1, 129])        # no year: the years' bands flattened
    got, _ = both.read(10, 10, 1, 1)
    assert got[1, 0, 0] == by_hand[0, 10, 10] and got[0, 0, 0] != got[1, 0, 0]
    assert chunked.is_zarr(store + "/utm33@2024")


def test_a_store_of_several_zones_names_them(tmp_path):
    store, _ = tessera_store(tmp_path, zones=("utm32", "utm33"))
    with pytest.raises(InputError, match=r"tessera.zarr' holds no georeferenced variable at its root; it holds "
                                         r"the groups utm32, utm33: name one, e.g. .*tessera.zarr/utm32"):
        chunked.ZarrRaster.open(store + "@2024")
    assert chunked.ZarrRaster.open(store + "/utm32@2024").count == 128
