"""Inputs on object storage: a real S3 server (SeaweedFS `weed mini`) on 127.0.0.1."""

import os

import numpy as np
import pytest
from conftest import cut_into_four, read, run_cli, seeded_image, write_raster

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]


@pytest.fixture
def s3(stores):
    """The session's S3 server; its credentials and endpoint are in the environment."""
    return stores["s3"]


def s3_env(s3, key=None):
    return dict(os.environ, AWS_ACCESS_KEY_ID=key or s3["key"])


def test_encode_reads_a_mosaic_from_s3_like_from_disk(s3, tmp_path):
    data = seeded_image((3, 90, 130), seed=4)
    local = cut_into_four(tmp_path, data)
    for path in local:
        s3["fs"].put(path, f"rasters/{os.path.basename(path)}")
    args = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32", "--quiet"]
    a = run_cli("encode", *local, "-o", tmp_path / "local", *args)
    b = run_cli("encode", "s3://rasters/part_*.tif", "-o", tmp_path / "s3", *args, env=s3_env(s3))
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    np.testing.assert_array_equal(read(tmp_path / "local" / "features.tif")[0],
                                  read(tmp_path / "s3" / "features.tif")[0])


def test_a_remote_raster_opened_again_while_cached_closes_cleanly(s3, tmp_path):
    """A driver that reads a mosaic (statistics) and then opens the same URL again (the
    report's imagery view) exits with no I/O error and no crash."""
    import subprocess
    import sys

    s3["fs"].put(write_raster(tmp_path / "one.tif", seeded_image((3, 32, 32))), "rasters/again.tif")
    code = ("from rayvit.io.mosaic import open_mosaic, open_raster\n"
            "m = open_mosaic(['s3://rasters/again.tif'])\n"
            "print(int(m.read(0, 0, 8, 8)[0].sum()))\n"
            "for _ in range(2):\n"
            "    with open_raster('s3://rasters/again.tif') as ds:\n"
            "        again = int(ds.read(window=((0, 8), (0, 8))).sum())\n"
            "print(again)\n"
            "print(int(m.read(0, 0, 8, 8)[0].sum()))\n")
    # a process of its own: what is checked is how it exits
    r = subprocess.run([sys.executable, "-c", code], env=s3_env(s3), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    first, again, third = r.stdout.split()
    assert first == again == third


def test_s3_errors_name_the_url(s3, tmp_path):
    path = write_raster(tmp_path / "one.tif", seeded_image((3, 32, 32)))
    s3["fs"].put(path, "rasters/one.tif")
    args = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32"]
    missing = run_cli("encode", "s3://rasters/nope.tif", "-o", tmp_path / "m", *args, env=s3_env(s3))
    assert missing.returncode == 2 and "s3://rasters/nope.tif" in missing.stderr
    wrong = run_cli("encode", "s3://rasters/one.tif", "-o", tmp_path / "w", *args,
                    env=s3_env(s3, key="not-the-key"))
    assert wrong.returncode == 2 and "s3://rasters/one.tif' was denied; check the credentials" in wrong.stderr
    assert s3["secret"] not in wrong.stderr + missing.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "w").exists()


def test_encode_reduce_cluster_classify_with_inputs_and_outputs_in_the_bucket(s3, tmp_path):
    """The whole chain on object storage; each product appears with its sidecar, last. The
    features are blocks + VRT (what large outputs get): the workers upload the blocks, and the
    report reads them there."""
    import geopandas as gpd
    from shapely.geometry import Point

    data = seeded_image((3, 96, 128), seed=7)
    s3["fs"].put(write_raster(tmp_path / "scene.tif", data), "rasters/scene.tif")
    gpd.GeoDataFrame({"Type": ["a", "b"] * 4}, crs="EPSG:32633", geometry=[
        Point(500000 + 20 + 40 * i, 4000000 - 20 - 30 * (i % 3)) for i in range(8)]).to_file(tmp_path / "pts.gpkg")
    s3["fs"].put(str(tmp_path / "pts.gpkg"), "rasters/pts.gpkg")
    env = dict(s3_env(s3), RAYVIT_STAGING=str(tmp_path / "staging"))
    enc = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32", "--quiet"]
    blocks = ["--blocks", "--block-size", "2"]
    steps = [("encode", "s3://rasters/scene.tif", "-o", "s3://results/feat", *blocks, *enc),
             ("reduce", "s3://results/feat/features.vrt", "-o", "s3://results/red", "--quiet"),
             ("cluster", "s3://results/red/reduced.tif", "-o", "s3://results/clu", "--n-clusters", "3", "--quiet"),
             ("classify", "s3://results/red/reduced.tif", "s3://rasters/pts.gpkg", "-o", "s3://results/cls",
              "--label", "Type", "--cv", "none", "--quiet")]
    for step in steps:
        r = run_cli(*step, env=env)
        assert r.returncode == 0, r.stderr
        assert s3["secret"] not in r.stdout + r.stderr
    listing = {p.split("/", 2)[1]: sorted(q.rsplit("/", 1)[1] for q in s3["fs"].find(p))
               for p in ("results/feat", "results/red", "results/clu", "results/cls")}
    assert {"features.json", "features.vrt", "report.html", "run.json"} <= set(listing["feat"])
    assert sum(name.startswith("block_") for name in listing["feat"]) == 12   # 6 x 8 features, 2 x 2 each
    report = s3["fs"].cat("results/feat/report.html").decode()
    assert report.count("data:image/png;base64,") == 1                # the features' quicklook
    assert {"clusters.tif", "clusters.json", "model.joblib", "metrics.json", "quicklook.png"} <= set(listing["clu"])
    assert {"prediction.tif", "prediction.json", "samples.gpkg"} <= set(listing["cls"])
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())
    # (that encode + reduce in a bucket equal the same two steps on disk: test_cloud_stores.py, per scheme)
    # re-applying a model stored in the bucket
    again = run_cli("cluster", "s3://results/red/reduced.tif", "-o", tmp_path / "again", "--model",
                    "s3://results/clu/model.joblib", "--quiet", env=env)
    assert again.returncode == 0, again.stderr


def test_output_bucket_errors(s3, tmp_path):
    path = write_raster(tmp_path / "r.tif", np.random.default_rng(0).normal(size=(3, 20, 20)).astype("float32"))
    env = dict(s3_env(s3), RAYVIT_STAGING=str(tmp_path / "staging"))
    missing = run_cli("reduce", path, "-o", "s3://no-such-bucket/out", env=env)
    assert missing.returncode == 2 and "bucket 'no-such-bucket' does not exist" in missing.stderr
    wrong = run_cli("reduce", path, "-o", "s3://results/out", env=dict(env, AWS_SECRET_ACCESS_KEY="wrong"))
    assert wrong.returncode == 2 and "access was denied; check the credentials" in wrong.stderr
    assert "wrong" not in wrong.stderr.replace("--", "") and s3["secret"] not in wrong.stderr


def test_int8_features_table_search_and_change_in_the_bucket(s3, tmp_path, monkeypatch):
    """Quantisation of blocks that live in the bucket, and the embedding products written there.
    The product is above the VRT limit: its tile index alone is the entry point, which the
    analysis stages read from the bucket (blocks found through it, codes dequantised with the
    scales and offsets it declares); the report says why it draws no map."""
    import geopandas as gpd
    import pyarrow.parquet as pq
    from shapely.geometry import Point

    from rayvit.io import writer

    monkeypatch.setattr(writer, "VRT_SOURCES", 0)

    data = seeded_image((3, 96, 128), seed=9)
    s3["fs"].put(write_raster(tmp_path / "scene.tif", data), "rasters/scene8.tif")
    gpd.GeoDataFrame(crs="EPSG:32633", geometry=[Point(500040, 3999960)]).to_file(tmp_path / "pos.gpkg")
    s3["fs"].put(str(tmp_path / "pos.gpkg"), "rasters/pos.gpkg")
    env = dict(s3_env(s3), RAYVIT_STAGING=str(tmp_path / "staging"))
    enc = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32", "--quiet"]
    steps = [("encode", "s3://rasters/scene8.tif", "-o", "s3://emb/feat", "--dtype", "int8", "--blocks",
              "--block-size", "2", *enc),
             ("table", "s3://emb/feat/features.gti.gpkg", "-o", "s3://emb/table", "--tile", "2", "--quiet"),
             ("search", "s3://emb/feat/features.gti.gpkg", "s3://rasters/pos.gpkg", "-o", "s3://emb/search",
              "--top-k", "3", "--quiet"),
             ("change", "s3://emb/feat/features.gti.gpkg", "s3://emb/feat/features.gti.gpkg", "-o",
              "s3://emb/change", "--quiet")]
    for step in steps:
        r = run_cli(*step, env=env)
        assert r.returncode == 0, r.stderr
    files = {p.split("/", 2)[1]: sorted(q.split("/", 2)[2] for q in s3["fs"].find(p))
             for p in ("emb/feat", "emb/table", "emb/search", "emb/change")}
    assert {"features.gti.gpkg", "report.html"} <= set(files["feat"]) and "features.vrt" not in files["feat"]
    report = s3["fs"].cat("emb/feat/report.html").decode()
    assert "Not drawn: GDAL cannot read a tile index in an object store" in report
    assert any(f.startswith("blocks/q/block_") for f in files["feat"])
    assert not any(f.startswith("blocks/block_") for f in files["feat"])    # float blocks dropped
    assert "_table.json" in files["table"] and any(f.startswith("part-") for f in files["table"])
    assert not any(f.startswith(".parts") for f in files["table"])
    assert {"hits.parquet", "score.tif", "score.json"} <= set(files["search"])
    assert {"hotspots.parquet", "change.tif"} <= set(files["change"])
    # the bucket's int8 product equals the same run on disk
    local = run_cli("encode", write_raster(tmp_path / "l.tif", data), "-o", tmp_path / "l", "--dtype", "int8",
                    "--blocks", "--block-size", "2", *enc)
    assert local.returncode == 0, local.stderr
    s3["fs"].get("emb/feat/", str(tmp_path / "froms3"), recursive=True)
    np.testing.assert_array_equal(read(tmp_path / "froms3" / "features.gti.gpkg")[0],
                                  read(tmp_path / "l" / "features.gti.gpkg")[0])
    s3["fs"].get("emb/search/hits.parquet", str(tmp_path / "hits.parquet"))
    assert pq.read_table(tmp_path / "hits.parquet").num_rows == 3


def test_remote_headers_honour_sidecar_files_and_skip_probing_folders_without_any(s3, tmp_path):
    """Each folder of remote inputs is listed once: where it holds a sidecar (.aux.xml here,
    setting a nodata value), GDAL still reads it; a folder without any is not probed."""
    from rayvit.io.mosaic import open_mosaic, survey_folders

    path = write_raster(tmp_path / "a.tif", seeded_image((2, 16, 16), seed=3))
    (tmp_path / "a.tif.aux.xml").write_text('<PAMDataset><PAMRasterBand band="1"><NoDataValue>7</NoDataValue>'
                                            '</PAMRasterBand><PAMRasterBand band="2"><NoDataValue>7</NoDataValue>'
                                            "</PAMRasterBand></PAMDataset>")
    s3["fs"].put(path, "rasters/side/a.tif")
    s3["fs"].put(str(tmp_path / "a.tif.aux.xml"), "rasters/side/a.tif.aux.xml")
    s3["fs"].put(path, "rasters/bare/a.tif")
    urls = ["s3://rasters/side/a.tif", "s3://rasters/bare/a.tif"]
    assert survey_folders(urls, None)[0] == {"s3://rasters/bare"}
    side, bare = (open_mosaic([u]).sources[0] for u in urls)
    assert side.nodata == 7 and bare.nodata is None and side.sidecars and not bare.sidecars   # reads too


def test_headers_of_objects_are_kept_and_read_again_only_for_objects_that_changed(s3, tmp_path, monkeypatch):
    """The sources index of objects: their size and ETag come from the folder's listing; a
    later run describes only the object rewritten since (a new ETag), in input order."""
    from rayvit.io import sources
    from rayvit.io.mosaic import describe, survey_folders

    monkeypatch.setenv("RAYVIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "INDEX_FILES", 1)
    local = cut_into_four(tmp_path, seeded_image((3, 90, 130), seed=6))
    urls = [f"s3://rasters/kept/{os.path.basename(p)}" for p in local]
    for path, url in zip(local, urls):
        s3["fs"].put(path, url)
    calls = []

    def counting(url):
        calls.append(url)
        return describe(url)

    def run():
        return sources.describe_all(urls, counting, versions=survey_folders(urls, None)[1])

    first = run()
    assert sorted(calls) == sorted(urls) and [s.url for s in first] == urls
    assert list(sources.read_index(sources.index_path(urls))[0]) == urls
    calls.clear()
    assert run() == first and calls == []
    write_raster(local[2], seeded_image((2, 53, 69), seed=7), first[2].affine)     # 2 bands now
    s3["fs"].put(local[2], urls[2])
    third = run()
    assert calls == [urls[2]] and third[2].count == 2 and third[:2] == first[:2] and third[3] == first[3]
    # no listing (no version): described every run, and not kept
    calls.clear()
    assert sources.describe_all(urls, counting) == third and sorted(calls) == sorted(urls)
