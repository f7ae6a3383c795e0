"""`rayvit bench scale`'s inputs: the same pixels as one file or many, and a synthetic sources
index that a dry run plans from without opening a file."""

import glob
import os

import numpy as np
import pytest

from rayvit.bench.scale import write_area, write_synthetic_index
from rayvit.io.mosaic import open_mosaic


def test_the_area_as_many_files_reads_like_one_file(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (3, 96, 96), dtype=np.uint8)
    one = open_mosaic([write_area(str(tmp_path / "one"), data, 1)])
    many = write_area(str(tmp_path / "many"), data, 16)
    assert len(glob.glob(many)) == 16
    mosaic = open_mosaic([many])
    assert mosaic.grid == one.grid
    np.testing.assert_array_equal(mosaic.read(0, 0, 96, 96)[0], data)
    with pytest.raises(ValueError, match="12 files do not make a square"):
        write_area(str(tmp_path / "bad"), data, 12)


def test_a_synthetic_index_plans_a_mosaic_of_files_that_need_not_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYVIT_CACHE", str(tmp_path / "cache"))
    path = str(tmp_path / "idx.gti.gpkg")
    write_synthetic_index(path, 30)                       # 5 x 5 files of 128 px
    mosaic = open_mosaic([path])
    assert len(mosaic.sources) == 25 and (mosaic.grid.width, mosaic.grid.height) == (640, 640)
    assert not any(glob.glob(str(tmp_path / "virtual_*")))


def test_a_bench_product_is_a_block_product_that_gdal_and_rayvit_read_alike(tmp_path):
    """write_product: the first block written by the block writer, the others copies of it
    with their own origin; committed with its tile index, read the same through GDAL and
    through rayvit's reader (the bench times both)."""
    import rasterio

    from rayvit.analysis.source import open_input
    from rayvit.bench.scale import PRODUCT_BLOCK, time_open_read, write_product

    path = write_product(str(tmp_path / "p"), 16, bands=3)
    assert path.endswith("features.gti.gpkg")
    side = 4 * PRODUCT_BLOCK
    with rasterio.open(path) as ds:
        assert (ds.width, ds.height, ds.count) == (side, side, 3)
        data = ds.read()
        with rasterio.open(str(tmp_path / "p" / "blocks" / "block_00002_00001.tif")) as block:
            assert block.transform.c == ds.transform.c + PRODUCT_BLOCK * ds.transform.a
            assert block.transform.f == ds.transform.f + 2 * PRODUCT_BLOCK * ds.transform.e
    first = data[:, :PRODUCT_BLOCK, :PRODUCT_BLOCK]
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(data, np.tile(first, (1, 4, 4)))
    got, valid = open_input(path).read(0, 0, side, side)
    assert valid.all()
    np.testing.assert_array_equal(got, data)
    assert all(time_open_read(path, how, repeat=1) > 0 for how in ("gdal", "rayvit"))


@pytest.mark.slow
def test_objects_on_s3_are_described_concurrently_and_the_rate_reported(stores, tmp_path, capsys):
    """bench_s3's describe half on the session's S3 server: every object uploaded is
    described, and the rates, concurrent and one at a time, are printed."""
    from rayvit.bench.scale import bench_s3

    data = np.random.default_rng(2).integers(0, 255, (3, 256, 256), dtype=np.uint8)
    rows = bench_s3(str(tmp_path), "s3://rasters/bench", data, (), {"RAYVIT_CACHE": str(tmp_path / "cache")}, 1.0, 64)
    assert rows["describe"]["files"] == 64 and len(stores["s3"]["fs"].find("rasters/bench/describe")) == 64
    assert rows["describe"]["files_per_s"] > 0 and rows["describe"]["one_at_a_time_files_per_s"] > 0
    assert rows["describe"]["index_found_s"] > 0
    assert os.listdir(tmp_path / "cache" / "sources")          # the second pass had their index
    assert "64 objects described" in capsys.readouterr().out
