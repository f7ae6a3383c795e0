"""Zarr products end to end: ``rayvit encode --format zarr`` writes a store that xarray opens
with its georeference, holding the very values of the GeoTIFF product; the analysis stages
and ``rayvit.open`` read it; what it cannot write yet is refused, writing nothing."""

import json

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


def test_an_int8_zarr_product_holds_codes_and_a_scale_per_pixel_within_half_a_step(scene, tmp_path, ray_local):
    """``--dtype int8 --format zarr``: each write task quantises its block per pixel (codes and
    scales exactly quantize.per_pixel of the float32 product's values), declared as the
    geoemb per_pixel_scale quantisation; rayvit.open gives code x scale, within half a step."""
    from rayvit.io import quantize

    path, _ = scene
    for dtype, fmt in (("int8", "zarr"), ("float32", "gtiff")):
        r = run_cli("encode", path, "-o", tmp_path / dtype, "--format", fmt, "--dtype", dtype, *ENCODE)
        assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "float32" / "features.tif") as ds:
        want = ds.read()
    valid = ~np.isnan(want).any(axis=0)
    codes, scales = quantize.per_pixel(want, valid)
    ds = xr.open_zarr(tmp_path / "int8" / "features.zarr")
    assert ds.features.dtype == np.int8 and ds.scales.dtype == np.float32 and ds.scales.dims == ("y", "x")
    assert ds.attrs["geoemb:quantization"]["method"] == "per_pixel_scale"
    np.testing.assert_array_equal(ds.features.values, codes)
    np.testing.assert_array_equal(ds.scales.values, scales)               # NaN where no data
    got = rayvit.open(tmp_path / "int8").values
    np.testing.assert_array_equal(np.isnan(got).any(axis=0), ~valid)
    assert (np.abs(got - want)[:, valid] <= scales[valid] / 2 * (1 + 1e-6)).all()
    with open(tmp_path / "int8" / "features.json") as fh:
        assert json.load(fh)["quantization"]["method"].startswith("per pixel: value = code * scale")


def test_the_analysis_stages_write_zarr_products_with_the_geotiff_products_values(scene, tmp_path, ray_local):
    """``--format zarr`` on an analysis stage: a store per product (clusters, the classes and
    their probabilities, the reduced bands) holding the GeoTIFF products' values, categories
    and colour table as attributes; xarray and rayvit.open read them, nodata as NaN."""
    import geopandas as gpd
    from shapely.geometry import Point

    path, d = scene
    rayvit.encode(path, str(tmp_path / "f"), model="rayvit_patchmean_p4", size=16, block_size=6, **Q)
    src = str(tmp_path / "f" / "features.tif")
    points = [Point(500000.0 + 40 * c + 20, 4000000.0 - 40 * r - 20) for r, c in ((2, 2), (5, 20), (15, 6), (20, 22))]
    gpd.GeoDataFrame({"Type": ["x", "y", "x", "y"]}, geometry=points, crs="EPSG:32633").to_file(tmp_path / "p.gpkg")
    for fmt in ("zarr", "gtiff"):
        rayvit.cluster(src, str(tmp_path / f"c_{fmt}"), n_clusters=3, format=fmt, block_size=8, **Q)
        rayvit.classify(src, str(tmp_path / "p.gpkg"), str(tmp_path / f"k_{fmt}"), label="Type", cv="none", proba=True,
                        format=fmt, block_size=8, **Q)
        rayvit.reduce(src, str(tmp_path / f"r_{fmt}"), n_components=3, format=fmt, block_size=8, **Q)
    r = run_cli("cluster", src, "-o", tmp_path / "cli", "--n-clusters", "3", "--format", "zarr",
                "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "k_zarr").iterdir()) == [
        "metrics.json", "model.joblib", "prediction.json", "prediction.zarr", "probability.json", "probability.zarr",
        "quicklook.png", "report.html", "run.json", "samples.gpkg"]
    for run, name in (("c", "clusters"), ("k", "prediction"), ("k", "probability"), ("r", "reduced")):
        with rasterio.open(tmp_path / f"{run}_gtiff" / f"{name}.tif") as ds:
            want, crs, colormap = ds.read(masked=True).astype(np.float64).filled(np.nan), ds.crs, None
            if ds.colorinterp[0].name == "palette":
                colormap = ds.colormap(1)
        da = xr.open_zarr(tmp_path / f"{run}_zarr" / f"{name}.zarr")[name]
        assert da.rio.crs == crs
        np.testing.assert_array_equal(da.values.astype(np.float64), want)       # CF _FillValue: NaN
        np.testing.assert_array_equal(rayvit.open(tmp_path / f"{run}_zarr" / f"{name}.zarr").values, want)
        if colormap:
            table = {int(k): tuple(v) for k, v in da.attrs["colormap"].items()}   # GDAL pads its table to 256
            assert len(table) >= 2 and table == {k: colormap[k] for k in table}
    assert xr.open_zarr(tmp_path / "k_zarr" / "prediction.zarr").prediction.attrs["flag_meanings"] == "x y"


def test_what_zarr_does_not_write_is_refused_before_anything_is_written(scene, tmp_path):
    path, _ = scene
    r = run_cli("encode", path, "-o", tmp_path / "u8", "--format", "zarr", "--dtype", "uint8", *ENCODE)
    assert r.returncode != 0 and "--format zarr quantises to int8 with a scale per pixel, not to uint8" in r.stderr
    assert not (tmp_path / "u8").exists()
    r = run_cli("encode", path, "-o", tmp_path / "x", "--format", "netcdf", *ENCODE)
    assert r.returncode != 0 and "invalid choice: 'netcdf'" in r.stderr
