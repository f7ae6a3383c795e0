"""Time stacks: Zarr products of three dates become one (time, band, y, x) store by linking
their shards; xarray reads its dates; every stage reads one date as STORE@DATE; the
trajectory (each date's cosine distance to the first) equals numpy's on every pixel."""

import os

import numpy as np
import pytest
import rasterio

import rayvit
from rayvit.errors import InputError, OutputError
from rayvit.landscape import make_sample_raster

import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
import zarr
DATES = ("2021-06-01", "2022-06-01", "2023-06-01")
Q = {"progress": False}


@pytest.fixture(scope="module")
def dates(tmp_path_factory, ray_local):
    """Three dates of one grid, each encoded to a Zarr product in dates/YYYY-MM-DD/."""
    root = tmp_path_factory.mktemp("stack")
    for i, day in enumerate(DATES):
        raster = make_sample_raster(str(root / f"d{i}.tif"), 200, 180, bands=4, dtype="uint16", seed=i)
        rayvit.encode(raster, str(root / "dates" / day), model="rayvit_patchmean_p4", size=16, format="zarr",
                      block_size=16, **Q)
    return root


def test_three_dates_stack_into_one_store_with_a_time_dimension(dates, tmp_path):
    products = [str(dates / "dates" / d) for d in DATES]
    result = rayvit.stack(products, str(tmp_path / "stack"), **Q)
    out = result.output
    assert result.dates == list(DATES) and result.shards > 0
    ds = xr.open_zarr(out)
    assert ds.features.dims == ("time", "band", "y", "x") and ds.features.shape[0] == 3
    assert [str(t)[:10] for t in ds.time.values] == list(DATES)
    for t, day in enumerate(DATES):                              # each date is its product, bit for bit
        alone = zarr.open_array(os.path.join(products[t], "features.zarr", "features"), mode="r")[:]
        np.testing.assert_array_equal(ds.features[t].values, alone)
    one = os.path.join(products[0], "features.zarr", "features", "c", "0", "0", "0")
    linked = os.path.join(out, "features", "c", "0", "0", "0", "0")
    assert os.path.samefile(one, linked)                          # a hard link: nothing copied
    assert ds.features.rio.crs == "EPSG:32633"
    with pytest.raises(OutputError, match="already holds a product; use --overwrite"):
        rayvit.stack(products, str(tmp_path / "stack"), **Q)
    with pytest.raises(InputError, match="--dates gives 2 dates for 3 inputs"):
        rayvit.stack(products, str(tmp_path / "s2"), dates=DATES[:2], **Q)
    with pytest.raises(InputError, match="distinct and in order"):
        rayvit.stack(products[::-1], str(tmp_path / "s3"), **Q)


def test_the_trajectory_is_each_dates_cosine_distance_to_the_first(dates, tmp_path):
    out = rayvit.stack([str(dates / "dates" / d) for d in DATES], str(tmp_path / "stack"), **Q).output
    r = rayvit.trajectory(out, str(tmp_path / "trajectory"), block_size=7, **Q)
    f = zarr.open_array(os.path.join(out, "features"), mode="r")[:].astype(np.float64)    # (t, d, y, x)
    dot = (f * f[:1]).sum(axis=1)
    norm = np.sqrt((f * f).sum(axis=1))
    want = (1 - dot / (norm * norm[:1])).astype(np.float32)
    want[:, np.isnan(f).any(axis=(0, 1))] = np.nan
    with rasterio.open(r.output) as ds:
        got = ds.read()
        assert list(ds.descriptions) == [f"distance_{DATES[0]}_to_{d}" for d in DATES]
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)
    assert np.nanmax(np.abs(got[0])) <= 2e-7 and np.nanmean(got[2]) > 0     # the first date is 0
    with pytest.raises(InputError, match="is not a time stack"):
        rayvit.trajectory(out + "@" + DATES[1], str(tmp_path / "t2"), **Q)


def test_change_and_other_stages_read_one_date_of_a_stack(dates, tmp_path):
    out = rayvit.stack([str(dates / "dates" / d) for d in DATES], str(tmp_path / "stack"), **Q).output
    a, b = (str(dates / "dates" / d / "features.zarr") for d in (DATES[0], DATES[2]))
    via_stack = rayvit.change(f"{out}@{DATES[0]}", f"{out}@{DATES[2]}", str(tmp_path / "c1"), **Q).output
    via_products = rayvit.change(a, b, str(tmp_path / "c2"), **Q).output
    with rasterio.open(via_stack) as x, rasterio.open(via_products) as y:
        np.testing.assert_array_equal(x.read(), y.read())
    with pytest.raises(InputError, match="has no date '2020-01-01'; its dates: 2021-06-01"):
        rayvit.cluster(f"{out}@2020-01-01", str(tmp_path / "k"), **Q)


def test_int8_products_stack_with_their_scales_and_the_trajectory_uses_their_values(dates, tmp_path):
    """int8 Zarr products (per-pixel scales) stack too: each date's codes and scales are its
    product's (both arrays' shards linked), and the trajectory is numpy's on code x scale."""
    from rayvit.io import quantize

    products = []
    for i, day in enumerate(DATES[:2]):
        products.append(str(tmp_path / "dates" / day))
        rayvit.encode(str(dates / f"d{i}.tif"), products[-1], model="rayvit_patchmean_p4", size=16, format="zarr",
                      dtype="int8", block_size=16, **Q)
    out = rayvit.stack(products, str(tmp_path / "stack"), **Q).output
    ds = xr.open_zarr(out)
    assert ds.features.dtype == np.int8 and ds.scales.dims == ("time", "y", "x")
    for t, product in enumerate(products):
        alone = zarr.open_group(os.path.join(product, "features.zarr"), mode="r")
        np.testing.assert_array_equal(ds.features[t].values, alone["features"][:])
        np.testing.assert_array_equal(ds.scales[t].values, alone["scales"][:])
    r = rayvit.trajectory(out, str(tmp_path / "trajectory"), block_size=7, **Q)
    f = quantize.per_pixel_values(ds.features.values, ds.scales.values)[0].astype(np.float64)
    dot = (f * f[:1]).sum(axis=1)
    norm = np.sqrt((f * f).sum(axis=1))
    want = (1 - dot / (norm * norm[:1])).astype(np.float32)
    with rasterio.open(r.output) as src:
        np.testing.assert_allclose(src.read(), want, rtol=0, atol=2e-7)
