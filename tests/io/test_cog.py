"""The write stage's block writer, in process: records, atomic files, values, tile sizes."""

import numpy as np
import rasterio

from rayvit.grid import Block
from rayvit.io.cog import BlockWriter
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
