"""STAC catalogues as mosaics: static catalogues (local and in a real S3 server), item
collections, stac-geoparquet, several resolutions, composites, one product per date."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import UTM, X0, Y0, read, run_cli, seeded_image, write_raster
from rasterio.transform import from_origin
from s3server import free_ports

ENC = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32", "--quiet"]
pytestmark = pytest.mark.usefixtures("ray_local")
BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B11": "swir16"}


def item(item_id, when, assets, cloud=None, bbox=(15.0, 36.1, 15.1, 36.2)):
    """A STAC item dict; ``assets``: {key: (href, [band names] or None)}."""
    def asset(href, names):
        out = {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}
        if names:
            out["eo:bands"] = [{"name": n, "common_name": BANDS.get(n, n)} for n in names]
        return out
    props = {"datetime": when}
    if cloud is not None:
        props["eo:cloud_cover"] = cloud
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "scenes",
            "bbox": list(bbox), "properties": props, "links": [],
            "geometry": {"type": "Polygon", "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]],
                                                             [bbox[0], bbox[3]], [bbox[0], bbox[1]]]]},
            "assets": {k: asset(*v) for k, v in assets.items()}}


def band_files(folder, name, data10, data20, origin=(X0, Y0)):
    """One COG per band: B02/B03/B04 at 10 m, B11 at 20 m. Returns {band: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, b in enumerate(("B02", "B03", "B04")):
        out[b] = write_raster(folder / f"{name}_{b}.tif", data10[i], from_origin(*origin, 10, 10), driver="COG")
    out["B11"] = write_raster(folder / f"{name}_B11.tif", data20, from_origin(*origin, 20, 20), driver="COG")
    return out


def static_catalog(root, items):
    """catalog.json -> items/<id>.json, with relative links and hrefs as a static catalogue has."""
    (root / "items").mkdir(parents=True, exist_ok=True)
    for it in items:
        (root / "items" / f"{it['id']}.json").write_text(json.dumps(it))
    cat = {"type": "Catalog", "stac_version": "1.0.0", "id": "test", "description": "test catalogue",
           "links": [{"rel": "item", "href": f"./items/{it['id']}.json"} for it in items]}
    (root / "catalog.json").write_text(json.dumps(cat))
    return root / "catalog.json"


def scene(seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(1, 3000, (3, 64, 96)).astype("uint16"), rng.integers(1, 3000, (32, 48)).astype("uint16"))


def stacked(path, data10, data20):
    """The four bands in one 10 m file, B11 repeated 2 x 2 (what nearest warping gives)."""
    up = data20.repeat(2, axis=0).repeat(2, axis=1)
    return write_raster(path, np.concatenate([data10, up[None]]), from_origin(X0, Y0, 10, 10))


@pytest.mark.slow
def test_a_static_catalogue_in_the_bucket_equals_the_same_files_as_paths(stores, tmp_path):
    """Two items side by side, each one 3-band COG asset with eo:bands: --assets by common name
    reads them as the same mosaic the two files give as paths."""
    left = seeded_image((3, 64, 64), seed=1, dtype="uint16", high=3000)
    right = seeded_image((3, 64, 64), seed=2, dtype="uint16", high=3000)
    files = [write_raster(tmp_path / "a.tif", left, driver="COG"),
             write_raster(tmp_path / "b.tif", right, from_origin(X0 + 640, Y0, 10, 10), driver="COG")]
    names = ["B04", "B03", "B02"]
    items = [item("a", "2025-06-01T10:00:00Z", {"visual": ("../../a.tif", names)}, cloud=5),
             item("b", "2025-06-01T10:00:00Z", {"visual": ("../../b.tif", names)}, cloud=5)]
    cat = static_catalog(tmp_path / "cat", items)
    fs = stores["s3"]["fs"]          # the session's S3 server; its credentials are in the environment
    fs.put(files[0], "stac/a.tif")
    fs.put(files[1], "stac/b.tif")
    fs.put(str(cat), "stac/cat/catalog.json")
    for it in items:
        fs.put(str(tmp_path / "cat" / "items" / f"{it['id']}.json"), f"stac/cat/items/{it['id']}.json")
    r = run_cli("encode", "--stac", "s3://stac/cat/catalog.json", "--assets", "red,green,blue",
                "-o", tmp_path / "stac", *ENC)
    assert r.returncode == 0, r.stderr
    # the same items as stac-geoparquet (written by rustac) in the bucket, hrefs absolute
    absolute = [dict(it, assets={"visual": dict(it["assets"]["visual"], href=f"s3://stac/{it['id']}.tif")})
                for it in items]
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": absolute}))
    subprocess.run([str(Path(sys.executable).with_name("rustac")), "translate", str(tmp_path / "items.json"),
                    str(tmp_path / "items.parquet")], check=True, timeout=60)
    fs.put(str(tmp_path / "items.parquet"), "stac/items.parquet")
    g = run_cli("encode", "--stac", "s3://stac/items.parquet", "--assets", "red,green,blue", "--dry-run",
                "-o", tmp_path / "gp", *ENC)
    assert g.returncode == 0, g.stderr
    assert "2 STAC item(s), 1 date(s) (2025-06-01)" in g.stdout and "a (2025-06-01T10:00:00Z, cloud 5 %)" in g.stdout
    p = run_cli("encode", *files, "-o", tmp_path / "paths", *ENC)
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(read(tmp_path / "stac" / "features.tif")[0],
                                  read(tmp_path / "paths" / "features.tif")[0])
    side = json.loads((tmp_path / "stac" / "features.json").read_text())["stac"]
    assert side["source"] == "s3://stac/cat/catalog.json" and [i["id"] for i in side["items"]] == ["a", "b"]
    assert side["items"][0]["assets"][0] == {"key": "visual", "href": "s3://stac/a.tif", "band": 1,
                                             "name": "B04", "res": 10.0, "warped": False}
    assert side["items"][0]["datetime"] == "2025-06-01T10:00:00Z"


def test_assets_at_two_resolutions_are_warped_onto_the_finest_grid(tmp_path):
    """Per-band assets, B11 at 20 m: the run equals one over the four bands stacked at 10 m."""
    data10, data20 = scene(3)
    hrefs = band_files(tmp_path / "data", "s", data10, data20)
    it = item("s", "2025-06-01T10:00:00Z", {b: (os.path.relpath(h, tmp_path), [b]) for b, h in hrefs.items()})
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": [it]}))
    r = run_cli("encode", "--stac", tmp_path / "items.json", "--assets", "blue,green,red,swir16",
                "-o", tmp_path / "stac", *ENC)
    assert r.returncode == 0, r.stderr
    p = run_cli("encode", stacked(tmp_path / "stack.tif", data10, data20), "-o", tmp_path / "paths", *ENC)
    assert p.returncode == 0, p.stderr
    a, profile, transform, _ = read(tmp_path / "stac" / "features.tif")
    np.testing.assert_array_equal(a, read(tmp_path / "paths" / "features.tif")[0])
    assert transform.a == 160.0         # 16-px patches of the 10 m grid
    side = json.loads((tmp_path / "stac" / "features.json").read_text())
    assert side["stac"]["target_res"] == 10.0
    assert [(x["name"], x["res"], x["warped"]) for x in side["stac"]["items"][0]["assets"]] == [
        ("B02", 10.0, False), ("B03", 10.0, False), ("B04", 10.0, False), ("B11", 20.0, True)]
    assert side["bands"] and side["input_grid"]["transform"][0] == 10.0


def test_composites_take_each_pixel_from_the_first_valid_item_in_their_order(tmp_path):
    """Two dates over one area; the clearer one has a nodata hole. least-cloudy: the clear
    date, the other inside the hole; last: the newer date everywhere."""
    from rayvit.encode.plan import EncodeOptions, stac_sources
    from rayvit.io.mosaic import open_mosaic

    old = seeded_image((64, 96), seed=4, dtype="uint16", high=3000) + 1
    new = seeded_image((64, 96), seed=5, dtype="uint16", high=3000) + 1
    new_hole = new.copy()
    new_hole[10:20, 30:50] = 0
    paths = {"old": write_raster(tmp_path / "old.tif", old, nodata=0),
             "new": write_raster(tmp_path / "new.tif", new_hole, nodata=0)}
    items = [item("old", "2025-05-01T10:00:00Z", {"B04": (paths["old"], ["B04"])}, cloud=30),
             item("new", "2025-07-01T10:00:00Z", {"B04": (paths["new"], ["B04"])}, cloud=2)]
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    expected = new.copy()
    expected[10:20, 30:50] = old[10:20, 30:50]
    for composite, want in (("least-cloudy", expected), ("first", old), ("last", expected)):
        o = EncodeOptions(stac=str(tmp_path / "items.json"), assets=("red",), composite=composite)
        m = open_mosaic(stac_sources(o))
        data, valid = m.read(0, 0, 64, 96)
        assert valid.all()
        np.testing.assert_array_equal(data[0], want, err_msg=composite)


def test_by_date_writes_one_product_per_date_on_one_grid_ready_for_change(tmp_path):
    """Items of two dates that cover different parts of the area: both products share the grid
    of the whole; a stac-geoparquet file (written by rustac) as the source; rayvit change runs
    on the pair."""
    a = seeded_image((64, 64), seed=6, dtype="uint16", high=3000) + 1
    b = seeded_image((64, 64), seed=7, dtype="uint16", high=3000) + 1
    pa_ = write_raster(tmp_path / "d1.tif", a, nodata=0)
    pb = write_raster(tmp_path / "d2.tif", b, from_origin(X0 + 320, Y0 - 320, 10, 10), nodata=0)
    items = [item("d1", "2025-05-01T10:00:00Z", {"red": (pa_, None)}, cloud=1.0),
             item("d2", "2025-08-01T10:00:00Z", {"red": (pb, None)}, cloud=3.0)]
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    rustac = Path(sys.executable).with_name("rustac")
    subprocess.run([str(rustac), "translate", str(tmp_path / "items.json"), str(tmp_path / "items.parquet")],
                   check=True, timeout=60)
    out = tmp_path / "dates"
    r = run_cli("encode", "--stac", tmp_path / "items.parquet", "--assets", "red", "--by-date", "-o", out, *ENC)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["2025-05-01", "2025-08-01"]
    grids = []
    for date, item_id in (("2025-05-01", "d1"), ("2025-08-01", "d2")):
        with rasterio.open(out / date / "features.tif") as ds:
            grids.append((ds.transform, ds.width, ds.height, ds.crs))
        side = json.loads((out / date / "features.json").read_text())
        assert [i["id"] for i in side["stac"]["items"]] == [item_id]
    assert grids[0] == grids[1] and grids[0][1:3] == (6, 6)      # (64 + 32) px / 16 per feature px
    c = run_cli("change", out / "2025-05-01" / "features.tif", out / "2025-08-01" / "features.tif",
                "-o", tmp_path / "chg", "--quiet")
    assert c.returncode == 0, c.stderr


def test_three_dates_encode_into_one_time_stack(tmp_path):
    """--by-date --format zarr --stack: a product per date and, from them, one (time, band, y,
    x) store whose every date is that date's product."""
    import xarray as xr
    import zarr

    items = []
    for i, day in enumerate(("2025-05-01", "2025-06-01", "2025-08-01")):
        data = seeded_image((64, 64), seed=20 + i, dtype="uint16", high=3000) + 1
        items.append(item(f"d{i}", f"{day}T10:00:00Z", {"red": (write_raster(tmp_path / f"d{i}.tif", data, nodata=0),
                                                               None)}, cloud=1.0))
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    out = tmp_path / "dates"
    r = run_cli("encode", "--stac", tmp_path / "items.json", "--assets", "red", "--by-date", "--format", "zarr",
                "--stack", "-o", out, *ENC)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["2025-05-01", "2025-06-01", "2025-08-01", "features.json", "features.zarr"]
    ds = xr.open_zarr(out / "features.zarr")
    assert ds.features.dims == ("time", "band", "y", "x")
    assert [str(t)[:10] for t in ds.time.values] == ["2025-05-01", "2025-06-01", "2025-08-01"]
    for t, day in enumerate(("2025-05-01", "2025-06-01", "2025-08-01")):
        np.testing.assert_array_equal(ds.features[t].values,
                                      zarr.open_array(str(out / day / "features.zarr" / "features"), mode="r")[:])
    bad = run_cli("encode", "--stac", tmp_path / "items.json", "--assets", "red", "--by-date", "--stack",
                  "-o", tmp_path / "x", *ENC)
    assert bad.returncode == 2 and "--stack stacks the dates of a --by-date run written with --format zarr" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_dry_run_lists_items_dates_area_and_tiles_and_writes_nothing(tmp_path):
    data10, data20 = scene(8)
    hrefs = band_files(tmp_path / "data", "s", data10, data20)
    items = [item("s1", "2025-06-01T10:00:00Z", {b: (h, [b]) for b, h in hrefs.items()}, cloud=12.5),
             item("s2", "2025-06-11T10:00:00Z", {b: (h, [b]) for b, h in hrefs.items()}, cloud=40)]
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    r = run_cli("encode", "--stac", tmp_path / "items.json", "--assets", "B04,B11", "--dry-run",
                "-o", tmp_path / "o", *ENC)
    assert r.returncode == 0, r.stderr
    assert "2 STAC item(s), 2 date(s) (2025-06-01, 2025-06-11), composite least-cloudy" in r.stdout
    assert "s1 (2025-06-01T10:00:00Z, cloud 12.5 %): B04 10 m, B11 20 m" in r.stdout
    assert "0.614 km2" in r.stdout and "tiles:    6 (2x3)" in r.stdout
    assert not (tmp_path / "o").exists()


def test_filters_select_items_like_a_search(tmp_path):
    from rayvit.io.stac import load_items

    items = [item("a", "2025-05-01T10:00:00Z", {}, cloud=5), item("b", "2025-07-01T10:00:00Z", {}, cloud=50),
             item("c", "2025-07-02T10:00:00Z", {}, cloud=10, bbox=(20, 40, 21, 41))]
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))

    def ids(**kw):
        return [i["id"] for i, _ in load_items(str(path), **kw)]

    assert ids() == ["a", "b", "c"]
    assert ids(datetime="2025-07-01") == ["b"] and ids(datetime="2025-06-01/..") == ["b", "c"]
    assert ids(query=["eo:cloud_cover<20"]) == ["a", "c"]
    assert ids(bbox=(14.9, 36.0, 15.05, 36.15)) == ["a", "b"]
    assert ids(collections=["other"]) == []


def test_bad_stac_inputs_are_clear_errors_and_write_nothing(tmp_path):
    data10, data20 = scene(9)
    hrefs = band_files(tmp_path / "data", "s", data10, data20)
    nocrs = tmp_path / "nocrs.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        with rasterio.open(nocrs, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint16") as ds:
            ds.write(np.ones((1, 8, 8), "uint16"))
    good = item("s", "2025-06-01T10:00:00Z", {b: (h, [b]) for b, h in hrefs.items()})
    bad = item("n", "2025-06-01T10:00:00Z", {"B04": (str(nocrs), ["B04"])})
    for name, features in (("good", [good]), ("nocrs", [bad])):
        (tmp_path / f"{name}.json").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    cases = [
        (["--stac", tmp_path / "good.json", "--assets", "red,nir"], "STAC item 's' has no asset 'nir'; its assets: B02 (B02)"),
        (["--stac", tmp_path / "good.json", "--assets", "red", "--datetime", "2020-01-01"],
         "matches --datetime 2020-01-01; widen the search"),
        (["--stac", "http://127.0.0.1:9/catalog.json", "--assets", "red"], "cannot be reached"),
        (["--stac", tmp_path / "nocrs.json", "--assets", "red"], "STAC item 'n', asset 'B04'"),
        (["--stac", tmp_path / "good.json"], "--stac needs --assets"),
        ([tmp_path / "x.tif", "--assets", "red"], "select STAC items: give them with --stac"),
    ]
    for args, message in cases:
        r = run_cli("encode", *args, "-o", tmp_path / "o", *ENC)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert not (tmp_path / "o").exists()
    assert "has no CRS" in run_cli("encode", "--stac", tmp_path / "nocrs.json", "--assets", "red",
                                   "-o", tmp_path / "o", *ENC).stderr


@pytest.mark.slow
def test_a_stac_api_search_through_pystac_client(tmp_path):
    """A real STAC API (rustac's server, memory backend) on 127.0.0.1: the search's collection,
    bbox and datetime pick the items, and the run equals the same file given as a path."""
    data10, data20 = scene(10)
    hrefs = band_files(tmp_path / "data", "s", data10, data20)
    items = [item("june", "2025-06-01T10:00:00Z", {b: (h, [b]) for b, h in hrefs.items()}, cloud=3),
             item("july", "2025-07-01T10:00:00Z", {b: (h, [b]) for b, h in hrefs.items()}, cloud=60),
             item("far", "2025-06-02T10:00:00Z", {b: (h, [b]) for b, h in hrefs.items()}, cloud=1,
                  bbox=(20, 40, 21, 41))]
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    (port,) = free_ports(1)
    rustac = Path(sys.executable).with_name("rustac")
    server = subprocess.Popen([str(rustac), "serve", "--addr", f"127.0.0.1:{port}", "--create-collections",
                               str(tmp_path / "items.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(api, timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "rustac serve did not start"
                time.sleep(0.3)
        search = ["--stac", api, "--collection", "scenes", "--bbox", "14.9,36,15.2,36.3", "--assets", "B04,B03,B02"]
        dry = run_cli("encode", *search, "--dry-run", "-o", tmp_path / "o", *ENC)
        assert dry.returncode == 0, dry.stderr
        assert "2 STAC item(s), 2 date(s) (2025-06-01, 2025-07-01)" in dry.stdout and "far" not in dry.stdout
        # this server lacks the query extension: --query is applied to what it returns
        clear = run_cli("encode", *search, "--query", "eo:cloud_cover<20", "--dry-run", "-o", tmp_path / "o", *ENC)
        assert clear.returncode == 0, clear.stderr
        assert "1 STAC item(s), 1 date(s) (2025-06-01)" in clear.stdout and "DoesNotConformTo" not in clear.stderr
        r = run_cli("encode", *search, "--datetime", "2025-06-01/2025-06-30", "-o", tmp_path / "api", *ENC)
        assert r.returncode == 0, r.stderr
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:      # seen once under load: it does not always stop on SIGTERM
            server.kill()
            server.wait(10)
    p = run_cli("encode", stacked(tmp_path / "stack.tif", data10, data20), "--bands", "3,2,1",
                "-o", tmp_path / "paths", *ENC)
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(read(tmp_path / "api" / "features.tif")[0],
                                  read(tmp_path / "paths" / "features.tif")[0])
    side = json.loads((tmp_path / "api" / "features.json").read_text())["stac"]
    assert side["source"] == api and [i["id"] for i in side["items"]] == ["june"]


def test_asset_band_names_reach_a_presets_band_matching(tmp_path):
    """Assets asked for by common name, out of the preset's order: the Sentinel-2 preset finds
    B02/B03/B04/B11 by the names the STAC metadata gives them and fills the rest."""
    data10, data20 = scene(12)
    hrefs = band_files(tmp_path / "data", "s", data10, data20)
    it = item("s", "2025-06-01T10:00:00Z", {b: (h, [b]) for b, h in hrefs.items()})
    (tmp_path / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": [it]}))
    r = run_cli("encode", "--stac", tmp_path / "items.json", "--assets", "swir16,red,green,blue",
                "--model", "ssl4eo-s2-vit-s16-dino", "--no-pretrained", "--band-fill", "zero", "--size", "32",
                "-o", tmp_path / "o", "--quiet")
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "o" / "features.json").read_text())
    fed = {row["band"]: (row.get("raster_band"), row.get("raster_name")) for row in side["band_map"]}
    assert fed["B02"] == (4, "B02") and fed["B03"] == (3, "B03") and fed["B04"] == (2, "B04")
    assert fed["B11"] == (1, "B11") and "fill" in next(row for row in side["band_map"] if row["band"] == "B08")
