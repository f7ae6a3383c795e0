"""Zarr products end to end: ``rayvit encode --format zarr`` writes a store that xarray opens
with its georeference, holding the very values of the GeoTIFF product; the analysis stages
and ``rayvit.open`` read it; what it cannot write yet is refused, writing nothing."""

import numpy as np
import pytest
import rasterio

import rayvit
from conftest import analysed, run_cli, seeded_image, write_raster

import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
Q = {"progress": False}
ENCODE = ("--model", "rayvit_patchmean_p4", "--size", "16", "--block-size", "6", "--quiet")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("zarr_scene")
    image = seeded_image((3, 90, 110), seed=3, high=250)
    image[:, 30:38, 40:52] = 255                                 # nodata: NaN features
    return write_raster(d / "scene.tif", image, nodata=255), d


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_a_zarr_product_opens_in_xarray_with_its_crs_and_the_geotiff_products_values(scene, dtype, ray_local):
    path, d = scene
    for fmt in ("zarr", "gtiff"):
        r = run_cli("encode", path, "-o", d / f"{fmt}_{dtype}", "--format", fmt, "--dtype", dtype, *ENCODE)
        assert r.returncode == 0, r.stderr
    store = d / f"zarr_{dtype}" / "features.zarr"
    assert sorted(p.name for p in store.parent.iterdir()) == ["features.json", "features.zarr", "report.html",
                                                              "run.json"]
    with rasterio.open(d / f"gtiff_{dtype}" / "features.tif") as ds:
        want, crs, transform, names = ds.read(), ds.crs, ds.transform, list(ds.descriptions)
    da = xr.open_zarr(store)["features"]
    assert da.dims == ("band", "y", "x") and da.dtype == np.dtype(dtype) and list(da.band.values) == names
    assert da.rio.crs == crs and da.rio.transform() == transform
    got = da.values
    assert np.isnan(got).any()
    np.testing.assert_array_equal(got.astype(np.float32), want)            # bit for bit, NaN where NaN
    assert da.attrs["model"] == "rayvit_patchmean_p4"
    opened = rayvit.open(store.parent)
    assert opened.rio.crs == crs and opened.dtype == np.float32
    np.testing.assert_array_equal(opened.values, want)


def test_the_analysis_stages_give_the_same_maps_on_a_zarr_product(scene, tmp_path, ray_local):
    import geopandas as gpd
    from shapely.geometry import Point

    path, d = scene
    for fmt in ("zarr", "gtiff"):
        rayvit.encode(path, str(tmp_path / fmt), model="rayvit_patchmean_p4", size=16, format=fmt, block_size=6, **Q)
    points = [Point(500000.0 + 40 * c + 20, 4000000.0 - 40 * r - 20) for r, c in ((2, 2), (5, 20), (15, 6), (20, 22))]
    gpd.GeoDataFrame({"Type": ["x", "y", "x", "y"]}, geometry=points, crs="EPSG:32633").to_file(tmp_path / "p.gpkg")
    pts = str(tmp_path / "p.gpkg")
    zarr_maps, gtiff_maps = (analysed(str(product), pts, "Type", tmp_path / f"maps_{i}", 3) for i, product in
                             enumerate((tmp_path / "zarr" / "features.zarr", tmp_path / "gtiff" / "features.tif")))
    for a, b in zip(zarr_maps, gtiff_maps):
        np.testing.assert_array_equal(a, b)


def test_a_zarr_written_by_xarray_is_an_input_like_the_same_geotiff(tmp_path, ray_local):
    """Any (band, y, x) Zarr variable with a CRS (rioxarray + xarray's to_zarr): cluster maps it
    as it maps the same values as a GeoTIFF, and rayvit.open opens it."""
    from rasterio.transform import from_origin

    data = seeded_image((6, 40, 50), seed=9, high=1000).astype("float32")
    data[:, 5:9, 5:12] = np.nan
    da = xr.DataArray(data, dims=("band", "y", "x"), name="embedding",
                      coords={"band": np.arange(1, 7), "y": 4000000 - (np.arange(40) + 0.5) * 10,
                              "x": 500000 + (np.arange(50) + 0.5) * 10})
    da.rio.write_crs("EPSG:32633").rio.write_transform(from_origin(500000, 4000000, 10, 10)).to_dataset() \
        .to_zarr(tmp_path / "theirs.zarr", zarr_format=3)
    tif = write_raster(tmp_path / "same.tif", data, nodata=float("nan"))
    maps = [rayvit.cluster(src, str(tmp_path / f"c{i}"), n_clusters=3, **Q).output
            for i, src in enumerate((str(tmp_path / "theirs.zarr"), tif))]
    with rasterio.open(maps[0]) as a, rasterio.open(maps[1]) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    np.testing.assert_array_equal(rayvit.open(tmp_path / "theirs.zarr").values, data)


def test_what_zarr_does_not_write_yet_is_refused_before_anything_is_written(scene, tmp_path):
    path, _ = scene
    r = run_cli("encode", path, "-o", tmp_path / "i8", "--format", "zarr", "--dtype", "int8", *ENCODE)
    assert r.returncode != 0 and "--format zarr writes float16/float32 products for now, not int8; use --format gtiff" in r.stderr
    assert not (tmp_path / "i8").exists()
    r = run_cli("encode", path, "-o", tmp_path / "x", "--format", "netcdf", *ENCODE)
    assert r.returncode != 0 and "invalid choice: 'netcdf'" in r.stderr
