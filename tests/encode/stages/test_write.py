"""The write stage's view of the features: each block's write task samples its part of the
report's quicklook, and the parts make exactly what reading the product back would give, so
the driver never reads the product at commit."""

import base64
import io
import re

import numpy as np
from PIL import Image

from conftest import seeded_image, write_raster
from rayvit.encode.stages.write import FeatureSample
from rayvit.grid import Block
from rayvit.report import quicklook as ql


def test_the_blocks_sample_parts_make_the_view_a_decimated_read_of_the_product_gives(tmp_path, monkeypatch):
    monkeypatch.setattr(ql, "MAX_SIDE", 37)                     # decimate 100 x 90 px
    monkeypatch.setattr(ql, "COMPONENT_BANDS", 5)
    features = seeded_image((12, 100, 90), seed=3, high=1000, dtype="uint16").astype(np.float32)
    valid = np.ones((100, 90), bool)
    valid[40:52, 10:33] = False
    features[:, ~valid] = np.nan
    path = write_raster(tmp_path / "f.tif", features, nodata=np.nan)
    expected = ql.read_small(path, ql.COMPONENT_BANDS)

    bands = ql.spread_bands(12, ql.COMPONENT_BANDS)
    sample = FeatureSample(100, 90, *ql.small_shape(100, 90, len(bands)), tuple(b - 1 for b in bands))
    assert (sample.height, sample.width) == expected.shape[1:] != (100, 90)
    parts = []
    for r in range(0, 100, 16):
        for c in range(0, 90, 16):
            block = Block(r // 16, c // 16, r, c, min(16, 100 - r), min(16, 90 - c))
            rows, cols = slice(r, r + block.rows), slice(c, c + block.cols)
            parts.append(sample.part(block, features[:, rows, cols].astype(np.float16), valid[rows, cols]))
    got = sample.assemble(parts)
    np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(expected))
    assert np.ma.getmaskarray(got).any() and not np.ma.getmaskarray(got).all()
    np.testing.assert_array_equal(got.filled(0), expected.filled(0).astype(np.float16))


def test_an_encode_report_shows_the_product_s_quicklook_without_reading_the_product(tmp_path, monkeypatch):
    from rayvit.encode.pipeline import encode
    from rayvit.landscape import make_sample_raster

    raster = make_sample_raster(str(tmp_path / "in.tif"), 700, 600, bands=4, dtype="uint16")
    reads = []
    original = ql.read_small
    monkeypatch.setattr(ql, "read_small", lambda *a, **k: reads.append(a) or original(*a, **k))
    r = encode(raster, str(tmp_path / "out"), model="rayvit_null_d96_p16", pretrained=False, size=64,
               dtype="float16", progress=False, block_size=8)
    assert len(r.plan.block_tasks()) > 1 and reads == []           # the driver read nothing back

    html = (tmp_path / "out" / "report.html").read_text()
    shown = re.search(r'alt="quicklook" src="data:image/png;base64,([^"]+)"', html).group(1)
    ql.quicklook(r.output, str(tmp_path / "read.png"), components=True)   # the product, read back
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(shown)))),
                                  np.asarray(Image.open(tmp_path / "read.png")))
