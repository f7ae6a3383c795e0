"""Embedding products: int8 storage, GeoParquet tables, few-shot search, change between dates."""

import json
import os

import duckdb
import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from conftest import alphaearth_raster, analysed, run_cli, tessera_store, tessera_tile, write_raster
from rasterio.transform import from_origin
from shapely.geometry import Point

from rayvit import change, cluster, encode, reduce, search, table
from rayvit.errors import InputError
from rayvit.io import quantize

Q = {"progress": False}
X0, Y0 = 500000.0, 4000000.0


def feature_raster(path, data, x0=X0, y0=Y0, res=10.0):
    return write_raster(path, data.astype("float32"), from_origin(x0, y0, res, res), nodata=float("nan"))


def test_int8_features_come_back_within_half_a_step(product):
    with rasterio.open(product["float32"]) as ds:
        ref = ds.read(masked=True).astype(np.float64)
        f32_size = os.path.getsize(product["float32"])
    for dtype in ("int8", "uint8"):
        path = product[dtype]
        with rasterio.open(path) as ds:
            assert ds.dtypes[0] == dtype and ds.nodata == quantize.nodata(dtype)
            codes, scale, offset = ds.read(masked=True), np.array(ds.scales), np.array(ds.offsets)
        assert (codes.mask == ref.mask).all()
        back = codes.astype(np.float64) * scale[:, None, None] + offset[:, None, None]
        err = np.abs(back - ref).max(axis=(1, 2))
        assert (err <= scale / 2 * (1 + 1e-5)).all()
        # the band's range spans the codes: its min and max come back exactly (to float32)
        np.testing.assert_allclose(back.min(axis=(1, 2)), ref.min(axis=(1, 2)), rtol=1e-6, atol=1e-6)
        sidecar = json.load(open(os.path.join(os.path.dirname(path), "features.json")))
        assert sidecar["dtype"] == dtype and sidecar["quantization"]["quantized_dtype"] == dtype
        np.testing.assert_allclose(sidecar["quantization"]["scale"], scale)
    # int8 blocks: the float blocks are gone, the VRT points at the quantised ones
    blocks = os.path.join(os.path.dirname(product["int8"]), "blocks")
    assert not [f for f in os.listdir(blocks) if f.endswith(".tif")] and os.listdir(os.path.join(blocks, "q"))
    assert os.path.getsize(product["uint8"]) < f32_size / 2


def test_analysis_reads_int8_written_by_others_as_floats(tmp_path, ray_local):
    """An int8 raster with GDAL scale/offset and nodata -128, written by another tool, gives
    the same PCA, clusters and similarity as the float raster it stands for."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 40, 50)) + np.linspace(0, 3, 50)[None, None, :]
    valid = np.ones((40, 50), bool)
    valid[:5, :7] = False
    scale, offset = quantize.params(*quantize.band_ranges(data, valid), "int8")
    codes = quantize.quantize(data, valid, scale, offset, "int8")
    i8 = write_raster(tmp_path / "i8.tif", codes, from_origin(X0, Y0, 10, 10), nodata=-128)
    with rasterio.open(i8, "r+") as ds:
        ds.scales, ds.offsets = tuple(scale), tuple(offset)
    floats = np.where(valid, quantize.dequantize(codes, scale, offset), np.nan)
    f32 = feature_raster(tmp_path / "f32.tif", floats)
    for src, name in ((i8, "a"), (f32, "b")):
        reduce(src, tmp_path / f"r{name}", **Q)
        cluster(src, tmp_path / f"c{name}", n_clusters=3, **Q)
    for output in ("r{}/reduced.tif", "c{}/clusters.tif"):
        a, b = (rasterio.open(tmp_path / output.format(n)).read() for n in "ab")
        np.testing.assert_array_equal(a, b)
    raw = write_raster(tmp_path / "raw.tif", codes, from_origin(X0, Y0, 10, 10), nodata=-128)
    with pytest.raises(InputError, match=r"int8 codes without a scale and offset.*gdal_edit.py -scale"):
        reduce(raw, tmp_path / "raw", **Q)
    assert not (tmp_path / "raw").exists()


def test_table_pooled_and_per_pixel(product, tmp_path):
    path = product["float32"]
    with rasterio.open(path) as ds:
        data, transform = ds.read(masked=True), ds.transform
    d, h, w = data.shape
    cells = product["table"]              # table(path, ..., pool="tile", tile=4), built once per session
    frame = gpd.read_parquet(cells)
    # the same cells by a plain numpy loop
    expected = {}
    for i in range(0, h, 4):
        for j in range(0, w, 4):
            cell = data[:, i:i + 4, j:j + 4]
            ok = ~cell.mask.any(axis=0)
            if ok.any():
                expected[(i // 4, j // 4)] = (cell.data[:, ok].mean(axis=1), ok.sum() / ok.size)
    assert product["table_rows"] == len(frame) == len(expected)
    for row in frame.itertuples():
        mean, fraction = expected[(row.row, row.col)]
        np.testing.assert_allclose(row.embedding, mean, rtol=1e-5, atol=1e-6)
        assert row.valid_fraction == pytest.approx(fraction)
        x0, y0 = transform @ (row.col * 4, row.row * 4)
        x1, y1 = transform @ (min(row.col * 4 + 4, w), min(row.row * 4 + 4, h))
        assert row.geometry.bounds == pytest.approx((x0, y1, x1, y0))
    assert frame.crs.to_epsg() == 32633
    schema = pq.read_schema(next(cells.glob("part-*.parquet")))
    geo, emb = json.loads(schema.metadata[b"geo"]), json.loads(schema.metadata[b"emb"])
    assert geo["version"] == "1.1.0" and geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert emb["emb:type"] == "chip" and emb["emb:dimensions"] == d and emb["data_type"] == "float32"
    assert emb["emb:chip_layout"]["chip_size"] == [4, 4]
    assert emb["emb:runtime_parameters"]["model"] == "vit_tiny_patch16_224"
    assert "weights_sha256" in json.loads(schema.metadata[b"rayvit"])["source_sidecar"]
    con = duckdb.connect()
    n, dims, bad = con.sql(
        f"select count(*), max(len(embedding)), sum(case when bbox.xmin > bbox.xmax then 1 else 0 end) "
        f"from read_parquet('{cells}/*.parquet')").fetchall()[0]
    assert (n, dims, bad) == (len(expected), d, 0)
    assert pq.read_table(cells).num_rows == len(expected)
    with pytest.raises(Exception, match="already holds a table"):
        table(path, str(cells), **Q)
    # one row per valid pixel, embeddings int8 with their scales
    table(path, str(tmp_path / "px"), pool="none", dtype="int8", **Q)
    px = pq.read_table(tmp_path / "px")
    ok = ~data.mask.any(axis=0)
    assert px.num_rows == ok.sum()
    quant = json.loads(px.schema.metadata[b"emb"])["emb:quantization"]
    codes = np.stack(px.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float64)
    back = codes * quant["scale"] + np.array(quant["offset"])
    rows, cols = px.column("row").to_numpy(), px.column("col").to_numpy()
    err = np.abs(back - data.data[:, rows, cols].T)
    assert (err <= np.array(quant["scale"]) / 2 * (1 + 1e-5)).all()


def planted(tmp_path):
    """8-band features: noise around a background direction, two 5x5 patches of a target
    direction (one across the 16-px window edge), and a third a little weaker."""
    rng = np.random.default_rng(5)
    data = rng.normal(size=(8, 48, 64)) * 0.3 + np.eye(8)[0][:, None, None]
    target = np.eye(8)[3][:, None, None] * 2
    data[:, 10:15, 13:18] += target
    data[:, 30:35, 40:45] += target
    data[:, 2:7, 50:55] += target * 0.6
    return feature_raster(tmp_path / "f.tif", data), data


def centre(row, col):
    return Point(X0 + (col + 0.5) * 10, Y0 - (row + 0.5) * 10)


def test_search_scores_and_exact_top_k(tmp_path, ray_local):
    path, data = planted(tmp_path)
    pos = gpd.GeoDataFrame(geometry=[centre(12, 15), centre(32, 42)], crs="EPSG:32633")
    neg = gpd.GeoDataFrame(geometry=[centre(25, 5), centre(40, 60)], crs="EPSG:32633")
    pos.to_file(tmp_path / "pos.gpkg")
    neg.to_file(tmp_path / "neg.gpkg")
    r = search(path, str(tmp_path / "pos.gpkg"), str(tmp_path / "s"), negatives=str(tmp_path / "neg.gpkg"),
               top_k_hits=3, exclude_radius=6, **Q)
    x = data.reshape(8, -1).T

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    p, n = x[[12 * 64 + 15, 32 * 64 + 42]], x[[25 * 64 + 5, 40 * 64 + 60]]
    expected = (unit(x) @ unit(p).T).mean(1) - (unit(x) @ unit(n).T).mean(1)
    score = rasterio.open(r.output).read(1).ravel()
    np.testing.assert_allclose(score, expected, rtol=1e-5, atol=1e-6)
    hits = gpd.read_parquet(r.extra["hits"])
    assert hits["rank"].tolist() == [1, 2, 3]
    assert hits["score"].is_monotonic_decreasing
    # one hit in each planted patch (the radius keeps neighbours out), the strong ones first
    inside = [(10 <= rw < 15 and 13 <= c < 18) or (30 <= rw < 35 and 40 <= c < 45) for rw, c in
              zip(hits["row"], hits["col"])]
    assert inside[:2] == [True, True] and 2 <= hits.loc[2, "row"] < 7 and 50 <= hits.loc[2, "col"] < 55
    assert hits.geometry.iloc[0].contains(centre(hits.loc[0, "row"], hits.loc[0, "col"]))
    best = np.argmax(expected)
    assert (hits.loc[0, "row"], hits.loc[0, "col"]) == divmod(int(best), 64)
    # rows of an embedding table as examples: the same positives from `rayvit table --pool none`
    table(path, str(tmp_path / "t"), pool="none", **Q)
    rows = gpd.read_parquet(tmp_path / "t")
    rows = rows[((rows["row"] == 12) & (rows["col"] == 15)) | ((rows["row"] == 32) & (rows["col"] == 42))]
    rows.to_parquet(tmp_path / "pos.parquet")
    r2 = search(path, str(tmp_path / "pos.parquet"), str(tmp_path / "s2"), negatives=str(tmp_path / "neg.gpkg"),
                top_k_hits=3, exclude_radius=6, **Q)
    np.testing.assert_allclose(rasterio.open(r2.output).read(1), rasterio.open(r.output).read(1), rtol=1e-6)


def test_search_bad_inputs_and_more_hits_than_pixels(tmp_path, ray_local):
    path, _ = planted(tmp_path)
    labelled = gpd.GeoDataFrame({"is_target": [0, 0]}, geometry=[centre(1, 1), centre(2, 2)], crs="EPSG:32633")
    labelled.to_file(tmp_path / "neg_only.gpkg")
    with pytest.raises(InputError, match="only negative examples"):
        search(path, str(tmp_path / "neg_only.gpkg"), str(tmp_path / "a"), label="is_target", **Q)
    far = gpd.GeoDataFrame(geometry=[Point(0, 0)], crs="EPSG:32633")
    far.to_file(tmp_path / "far.gpkg")
    with pytest.raises(InputError, match="none of its 1 geometries selects a valid pixel.*outside"):
        search(path, str(tmp_path / "far.gpkg"), str(tmp_path / "b"), **Q)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    small = feature_raster(tmp_path / "small.tif", np.random.default_rng(0).normal(size=(8, 3, 4)))
    pos = gpd.GeoDataFrame(geometry=[centre(1, 1)], crs="EPSG:32633")
    pos.to_file(tmp_path / "p.gpkg")
    res = run_cli("search", small, tmp_path / "p.gpkg", "-o", tmp_path / "c", "--top-k", "50", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "--top-k 50 is more than the 12 pixels" in res.stderr
    assert len(gpd.read_parquet(tmp_path / "c" / "hits.parquet")) == 12


def test_change_between_dates_on_different_grids(tmp_path, ray_local):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(8, 40, 50)) * 0.1 + 1.0
    b = a + rng.normal(size=a.shape) * 0.01
    b[:, 12:20, 10:22] = -a[:, 12:20, 10:22]          # 8 x 12 px reversed: distance 2
    b[:, 30:33, 40:43] *= np.arange(8)[:, None, None] - 3.5   # another direction
    pa = feature_raster(tmp_path / "a.tif", a)
    # date B on a shifted grid: starts 5 px right and 3 px down, one pixel wider
    pb = feature_raster(tmp_path / "b.tif", b[:, 3:, 5:], x0=X0 + 50, y0=Y0 - 30)
    r = change(pa, pb, str(tmp_path / "chg"), zscore=True, threshold=0.5, block_size=16, **Q)   # hot spots cross blocks
    with rasterio.open(r.output) as ds:
        out, t = ds.read(), ds.transform
    assert out.shape == (2, 37, 45) and (t.c, t.f) == (X0 + 50, Y0 - 30)
    aa, bb = a[:, 3:, 5:].reshape(8, -1).T, b[:, 3:, 5:].reshape(8, -1).T
    d = 1 - (aa * bb).sum(1) / np.linalg.norm(aa, axis=1) / np.linalg.norm(bb, axis=1)
    np.testing.assert_allclose(out[0].ravel(), d, atol=1e-5)
    np.testing.assert_allclose(out[1].ravel(), (d - d.mean()) / d.std(), rtol=1e-4, atol=1e-4)
    spots = gpd.read_parquet(r.extra["hotspots"])
    assert spots["n_pixels"].tolist() == [96, 9]
    assert spots.loc[0, "mean_change"] == pytest.approx(2.0, abs=1e-5)
    assert spots.loc[0, "area"] == pytest.approx(96 * 100.0)
    assert spots.geometry.iloc[0].bounds == pytest.approx((X0 + 100, Y0 - 200, X0 + 220, Y0 - 120))
    # sidecars that name another model are refused, unless --force
    for name, model in (("a", "vit_tiny_patch16_224"), ("b", "vit_small_patch16_224")):
        json.dump({"model": model, "layer": 11}, open(tmp_path / f"{name}.json", "w"))
    with pytest.raises(InputError, match="not encoded the same way.*vit_small_patch16_224"):
        change(pa, pb, str(tmp_path / "x"), **Q)
    assert not (tmp_path / "x").exists()
    change(pa, pb, str(tmp_path / "y"), force=True, **Q)
    other = feature_raster(tmp_path / "c.tif", a[:5])
    res = run_cli("change", pa, other, "-o", tmp_path / "z")
    assert res.returncode == 2 and "has 8 bands but" in res.stderr and not (tmp_path / "z").exists()


def test_alphaearth_codes_are_read_through_their_documented_dequantisation(tmp_path):
    from rayvit.analysis.source import open_input

    path, by_hand = alphaearth_raster(tmp_path)
    data, valid = open_input("alphaearth:" + path).read(0, 0, 30, 40)
    assert data.dtype == np.float32 and not valid[:4, :6].any() and valid.sum() == 30 * 40 - 24
    np.testing.assert_array_equal(data[:, valid], by_hand[:, valid])
    # int8 bands named as the dataset names them (A00..A63) need no prefix
    with rasterio.open(path, "r+") as ds:
        ds.descriptions = quantize.ALPHAEARTH_BANDS
    np.testing.assert_array_equal(open_input(path).read(0, 0, 30, 40)[0], data)
    floats = feature_raster(tmp_path / "f.tif", by_hand)
    with pytest.raises(InputError, match=r"f.tif' is float32, not the int8 codes of AlphaEarth.*drop the prefix"):
        open_input("alphaearth:" + floats)


@pytest.mark.parametrize("kind", ["alphaearth", "tessera", "tessera-zarr"])
def test_every_analysis_stage_runs_on_others_embeddings_as_on_their_floats(kind, tmp_path, ray_local):
    """cluster, similarity, search and classify on ``alphaearth:ae.tif``, a TESSERA tile or one
    year of a TESSERA Zarr store give the outputs they give on the float raster the codes stand
    for (computed by hand)."""
    if kind == "alphaearth":
        path, by_hand = alphaearth_raster(tmp_path)
        src = "alphaearth:" + path
    elif kind == "tessera":
        src, by_hand = tessera_tile(tmp_path)
    else:
        store, by_hand = tessera_store(tmp_path)
        src = store + "@2024"
    floats = feature_raster(tmp_path / "f.tif", by_hand)
    points = gpd.GeoDataFrame({"label": ["west", "west", "east", "east"]},
                              geometry=[centre(10, 5), centre(20, 12), centre(8, 30), centre(20, 33)],
                              crs="EPSG:32633")
    points.to_file(tmp_path / "p.gpkg")
    vectors = str(tmp_path / "p.gpkg")
    codes, values = (analysed(path, vectors, "label", tmp_path / name, 2) for name, path in (("codes", src), ("f", floats)))
    for a, b in zip(codes, values):
        np.testing.assert_array_equal(a, b)
    labels = codes[0][0]                                          # two clusters: the two directions
    assert labels[10, 5] != labels[10, 30] and labels[:3, :5].min() == labels.max()
