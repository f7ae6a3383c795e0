"""``rayvit.open``: every kind of rayvit product, and AlphaEarth codes, as a lazy DataArray
with its CRS, band names and the values the stored codes stand for."""

import numpy as np
import pytest
import rasterio

import rayvit
from conftest import alphaearth_raster, tessera_store, tessera_tile, write_raster
from rayvit.errors import InputError

import rioxarray  # noqa: F401  (the .rio accessor; the test extra installs the xarray extra)


def test_each_product_kind_opens_lazily_with_its_crs_names_and_float_values(product):
    for kind in ("float32", "int8", "uint8"):            # one COG; blocks + tile index/VRT; one COG
        path = product[kind]
        with rasterio.open(path) as ds:
            codes, scales, offsets = ds.read(), np.array(ds.scales), np.array(ds.offsets)
            nodata, crs, transform, names = ds.nodata, ds.crs, ds.transform, list(ds.descriptions)
        for where in (path, path.rsplit("/", 1)[0]):     # the raster, or its product directory
            da = rayvit.open(where)
            assert da.chunks is not None and da.dtype == np.float32 and da.dims == ("band", "y", "x")
            assert da.rio.crs == crs and da.rio.transform() == transform and list(da.band.values) == names
        got = da.values
        if kind == "float32":
            np.testing.assert_array_equal(got, codes)     # NaN where NaN: bit for bit
        else:
            want = (codes * scales[:, None, None] + offsets[:, None, None]).astype(np.float32)
            want[codes == nodata] = np.nan
            np.testing.assert_array_equal(got, want)
            assert np.isnan(got).any() == (codes == nodata).any()
            raw = rayvit.open(path, dequantize=False)
            assert raw.dtype == np.dtype(kind) and (raw.values == codes).all()


def test_alphaearth_codes_open_through_their_formula(tmp_path):
    path, by_hand = alphaearth_raster(tmp_path)
    da = rayvit.open("alphaearth:" + path)
    assert da.rio.crs == "EPSG:32633" and da.shape == (64, 30, 40) and da.chunks is not None
    np.testing.assert_array_equal(da.values, by_hand)    # NaN on the -128 corner
    with rasterio.open(path, "r+") as ds:                # the dataset's band names: no prefix needed
        ds.descriptions = tuple(f"A{i:02d}" for i in range(64))
    np.testing.assert_array_equal(rayvit.open(path).values, by_hand)


def test_a_tessera_tile_opens_through_its_scales_on_its_landmask_grid(tmp_path):
    path, by_hand = tessera_tile(tmp_path)
    for name in ("tessera:" + path, path):
        da = rayvit.open(name)
        assert da.rio.crs == "EPSG:32633" and da.shape == (128, 24, 36) and da.chunks is not None
        with rasterio.open(tmp_path / "global_0.1_degree_tiff_all" / "grid_0.15_52.05.tiff") as ds:
            assert da.rio.transform() == ds.transform
        np.testing.assert_array_equal(da.values, by_hand)       # NaN where the scale is 0
    np.testing.assert_array_equal(rayvit.open(path)[:, 5:9, 30:33].values, by_hand[:, 5:9, 30:33])


def test_a_tessera_zarr_store_opens_with_its_years_dequantised_or_as_codes_and_scales(tmp_path):
    store, by_hand = tessera_store(tmp_path)
    da = rayvit.open(store)
    assert da.dims == ("time", "band", "y", "x") and list(da.time.values) == [2023, 2024] and da.chunks is not None
    assert da.rio.crs == "EPSG:32633" and da.rio.transform() == rasterio.transform.from_origin(500000, 4000000, 10, 10)
    np.testing.assert_array_equal(da.sel(time=2024).values, by_hand)        # NaN where either sentinel
    raw = rayvit.open(store, dequantize=False)
    assert raw.dtype == np.int8 and raw.scales.dims == ("time", "y", "x")
    np.testing.assert_array_equal(raw.sel(time=2024).values[:, 10, 10] * raw.scales.sel(time=2024).values[10, 10],
                                  by_hand[:, 10, 10])


def test_a_folder_without_a_finished_product_is_a_clear_error(tmp_path):
    write_raster(tmp_path / "x.tif", np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(InputError, match="holds no finished rayvit product.*pass the raster itself"):
        rayvit.open(tmp_path)
    with pytest.raises(InputError, match="cannot open .*nothing.tif"):
        rayvit.open(tmp_path / "nothing.tif")
