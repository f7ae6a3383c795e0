"""The write stage's block writer, in process: records, atomic files, values, tile sizes."""

import numpy as np
import pytest
import rasterio

from rayvit.grid import Block
from rayvit.io.cog import BAND_INTERLEAVE_MIN, BlockWriter, block_profile
from rayvit.io.storage import sha256_file


def writer(tmp_path, dtype="float32"):
    return BlockWriter(str(tmp_path), "EPSG:32633", (160.0, 0.0, 500000.0, 0.0, -160.0, 4000000.0), 3,
                       ("a", "b", "c"), dtype)


def test_a_block_is_written_atomically_with_its_record(tmp_path):
    data = np.random.default_rng(0).normal(size=(3, 126, 70)).astype(np.float16)
    valid = np.ones((126, 70), np.uint8)
    valid[:5] = 0
    block = Block(1, 2, 126, 252, 126, 70)
    record = writer(tmp_path, "float16").write(block, data, valid)
    path = tmp_path / "block_00001_00002.tif"
    assert record == {"by": 1, "bx": 2, "file": path.name, "data": True, "sha256": sha256_file(path)}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]        # no temporary file left
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(ds.read(), data.astype(np.float32))   # float16 values, exactly
        assert ds.transform == rasterio.Affine(160, 0, 500000 + 252 * 160, 0, -160, 4000000 - 126 * 160)
        assert ds.block_shapes[0] == (128, 80)   # tiles fit the block: no 256-px padding to compress
        assert ds.tags(1, "IMAGE_STRUCTURE").get("NBITS") == "16" and ds.descriptions == ("a", "b", "c")


def test_a_block_without_valid_pixels_writes_nothing(tmp_path):
    record = writer(tmp_path).write(Block(0, 0, 0, 0, 4, 4), np.zeros((3, 4, 4), np.float32),
                                    np.zeros((4, 4), np.uint8))
    assert record == {"by": 0, "bx": 0, "file": "block_00000_00000.tif", "data": False}
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bands, rows, cols, compress", [(3, 90, 70, "zstd"), (40, 90, 70, "zstd"),
                                                      (17, 300, 260, "zstd"), (40, 90, 70, "none")])
def test_float16_blocks_are_the_bytes_gdal_writes_for_nbits_16(tmp_path, bands, rows, cols, compress):
    """The float16 words go to the file as they are (no conversion by GDAL), and the file is
    byte for byte the one GDAL writes from float32 values with NBITS=16, NaN pixels included:
    also where rayvit compresses the tiles itself (many bands; several tiles across and down,
    edge tiles padded; uncompressed)."""
    rng = np.random.default_rng(bands)
    data = rng.normal(size=(bands, rows, cols)).astype(np.float16)
    data[:, :4] = np.nan
    valid = np.ones((rows, cols), np.uint8)
    block = Block(0, 1, 0, cols, rows, cols)
    names = tuple(f"f{i}" for i in range(bands))
    w = BlockWriter(str(tmp_path), "EPSG:32633", (160.0, 0.0, 500000.0, 0.0, -160.0, 4000000.0), bands,
                    names, "float16", compress)
    w.write(block, data, valid)
    ours = tmp_path / "block_00000_00001.tif"
    reference = tmp_path / "gdal.tif"
    with rasterio.open(reference, "w", width=cols, height=rows, count=bands, crs="EPSG:32633",
                       transform=rasterio.Affine(160, 0, 500000 + cols * 160, 0, -160, 4000000),
                       **block_profile("float16", compress, np.nan, rows, cols, bands)) as dst:
        dst.descriptions = names
        dst.write(data.astype(np.float32))
    assert ours.read_bytes() == reference.read_bytes()
    with rasterio.open(ours) as ds:
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.tags(1, "IMAGE_STRUCTURE").get("NBITS") == "16"
        np.testing.assert_array_equal(ds.read(), data.astype(np.float32))


def test_int8_many_band_blocks_are_the_bytes_gdal_writes(tmp_path):
    """Quantised many-band blocks (int8 codes, predictor 2 on bytes, band scales) compressed by
    rayvit: the same file as GDAL's."""
    data = np.random.default_rng(5).integers(-128, 128, size=(20, 70, 150)).astype(np.int8)
    scales, offsets = tuple(np.linspace(0.1, 2, 20)), tuple(np.linspace(-1, 1, 20))
    w = BlockWriter(str(tmp_path), "EPSG:32633", (10.0, 0.0, 0.0, 0.0, -10.0, 0.0), 20, tuple(map(str, range(20))),
                    "int8", nodata=-128, scales=scales, offsets=offsets)
    w.write(Block(0, 0, 0, 0, 70, 150), data, np.ones((70, 150), np.uint8))
    reference = tmp_path / "gdal.tif"
    with rasterio.open(reference, "w", width=150, height=70, count=20, crs="EPSG:32633",
                       transform=rasterio.Affine(10, 0, 0, 0, -10, 0),
                       **block_profile("int8", "zstd", -128, 70, 150, 20)) as dst:
        dst.descriptions = tuple(map(str, range(20)))
        dst.scales, dst.offsets = scales, offsets
        dst.write(data)
    assert (tmp_path / "block_00000_00000.tif").read_bytes() == reference.read_bytes()


def test_many_band_blocks_are_band_interleaved(tmp_path):
    """Feature blocks (more than 16 bands) are compressed band by band, without the transpose
    pixel interleaving needs; display rasters stay pixel-interleaved."""
    assert block_profile("float32", "zstd", count=BAND_INTERLEAVE_MIN)["interleave"] == "band"
    assert block_profile("float32", "zstd", count=BAND_INTERLEAVE_MIN - 1)["interleave"] == "pixel"
    data = np.random.default_rng(1).normal(size=(BAND_INTERLEAVE_MIN, 20, 20)).astype(np.float32)
    w = BlockWriter(str(tmp_path), "EPSG:32633", (160.0, 0.0, 500000.0, 0.0, -160.0, 4000000.0),
                    BAND_INTERLEAVE_MIN, tuple(map(str, range(BAND_INTERLEAVE_MIN))))
    w.write(Block(0, 0, 0, 0, 20, 20), data, np.ones((20, 20), np.uint8))
    with rasterio.open(tmp_path / "block_00000_00000.tif") as ds:
        assert ds.interleaving == rasterio.enums.Interleaving.band
        np.testing.assert_array_equal(ds.read(), data)
