"""STAC documents -> items -> bands: the pure parts of rayvit.io.stac."""

import pytest

from rayvit.errors import InputError
from rayvit.io import stac
from rayvit.io.mosaic import Source


@pytest.mark.parametrize("base, href, expected", [
    ("s3://b/cat/items/x.json", "../../data/x_B04.tif", "s3://b/data/x_B04.tif"),
    ("s3://b/cat/catalog.json", "./items/x.json", "s3://b/cat/items/x.json"),
    ("/data/cat/catalog.json", "items/x.json", "/data/cat/items/x.json"),
    ("https://h/cat/x.json", "gs://other/y.tif", "gs://other/y.tif"),
    ("/data/cat/x.json", "/abs/y.tif", "/abs/y.tif")])
def test_hrefs_resolve_against_the_document_they_come_from(base, href, expected):
    assert stac.resolve(base, href) == expected


ITEM = {"id": "s2", "assets": {
    "visual": {"href": "v.tif", "eo:bands": [{"name": "B04", "common_name": "red"},
                                             {"name": "B03", "common_name": "green"}]},
    "red": {"href": "r.tif", "eo:bands": [{"name": "B04", "common_name": "red"}]},
    "B8": {"href": "n.tif"},
    "swir": {"href": "s.tif", "bands": [{"name": "B11", "eo:common_name": "swir16"}]}}}


def test_assets_match_by_key_first_then_band_name_or_common_name():
    assert stac.match_assets(ITEM, ["red", "green", "B08", "swir16", "b11"]) == [
        ("red", 1, "B04"),            # the asset keyed red, not the red band of visual
        ("visual", 2, "B03"),         # a band inside a multi-band asset, by common name
        ("B8", 1, "B8"),              # keys match loosely: B08 = B8
        ("swir", 1, "B11"),           # STAC 1.1 bands / eo:common_name
        ("swir", 1, "B11")]


def test_a_missing_asset_lists_the_items_assets_and_bands():
    with pytest.raises(InputError, match=r"STAC item 's2' has no asset 'nir'; its assets: "
                                         r"visual \(B04, B03\), red \(B04\), B8, swir \(B11\)"):
        stac.match_assets(ITEM, ["red", "nir"])


def _item(i, when, cloud=None):
    return {"id": i, "collection": "c", "bbox": [0, 0, 1, 1],
            "properties": {"datetime": when, **({"eo:cloud_cover": cloud} if cloud is not None else {})}}


def test_filters_and_their_errors():
    it = _item("a", "2025-06-30T23:00:00Z", 12)
    assert stac.matches(it, datetime="2025-06-30") and stac.matches(it, datetime="../2025-06-30")
    assert not stac.matches(it, datetime="2025-07-01/..")
    assert stac.matches(it, query=["eo:cloud_cover<=12"]) and not stac.matches(it, query=["eo:cloud_cover<12"])
    assert not stac.matches(it, query=["platform==sentinel-2a"])      # absent property: no match
    assert not stac.matches(it, bbox=(2, 2, 3, 3)) and stac.matches(it, collections=["c"])
    with pytest.raises(InputError, match="--query 'cloud is low'"):
        stac.matches(it, query=["cloud is low"])
    with pytest.raises(InputError, match="--datetime 'June'"):
        stac.matches(it, datetime="June")


def _source(i, when, cloud):
    return Source(f"stac:c/{i}", "", (1, 0, 0, 0, -1, 0), 1, 1, 1, "uint16", None,
                  item=(("id", i), ("collection", "c"), ("datetime", when), ("cloud_cover", cloud), ("assets", ())))


def test_composite_orders_and_dates():
    s = [_source("a", "2025-06-01T10:00:00Z", 40), _source("b", "2025-05-01T10:00:00Z", None),
         _source("c", "2025-07-01T10:00:00Z", 5), _source("d", "2025-06-01T11:00:00Z", 5)]
    ids = lambda xs: [dict(x.item)["id"] for x in xs]   # noqa: E731
    assert ids(stac.order(s, "first")) == ["b", "a", "d", "c"]
    assert ids(stac.order(s, "last")) == ["c", "d", "a", "b"]
    assert ids(stac.order(s, "least-cloudy")) == ["d", "c", "a", "b"]    # ties oldest first, unknown last
    assert {k: ids(v) for k, v in stac.by_date(s).items()} == {
        "2025-05-01": ["b"], "2025-06-01": ["a", "d"], "2025-07-01": ["c"]}
    with pytest.raises(InputError, match="--composite 'median'"):
        stac.order(s, "median")


def test_an_asset_with_projection_metadata_is_described_without_opening_it(tmp_path, monkeypatch):
    """proj:code + proj:transform + proj:shape (asset or item) and the bands' data type give
    the asset's header as opening it would (CRS, grid, type, nodata, scale/offset); an asset
    that lacks any of them is opened."""
    from conftest import UTM, seeded_image, write_raster
    from rasterio.crs import CRS

    from rayvit.io.mosaic import describe

    path = write_raster(tmp_path / "r.tif", seeded_image((1, 20, 30), high=5000, dtype="uint16"), nodata=0)
    real = describe(path)
    asset = {"href": "r.tif", "proj:shape": [20, 30], "proj:transform": [*real.transform, 0, 0, 1],
             "raster:bands": [{"data_type": "uint16", "nodata": 0}], "eo:bands": [{"name": "B04", "common_name": "red"}]}
    item = {"id": "x", "properties": {"proj:code": UTM}, "assets": {"red": asset}}

    def opened(*args, **kwargs):
        raise AssertionError("the asset was opened")

    with monkeypatch.context() as m:
        m.setattr(stac, "describe", opened)
        part = stac.item_source(item, str(tmp_path / "item.json"), ["red"]).parts[0]
    assert part.url == path and CRS.from_wkt(part.crs) == CRS.from_wkt(real.crs)
    assert (part.transform, part.width, part.height, part.count, part.dtype, part.nodata, part.scales, part.offsets) == (
        real.transform, real.width, real.height, real.count, real.dtype, real.nodata, real.scales, real.offsets)
    del asset["proj:transform"]
    assert stac.item_source(item, str(tmp_path / "item.json"), ["red"]).parts[0] == real
