"""The device stage in process: a block from its raw window equals tile-by-tile encoding
merged with numpy, for every merge method, edge blocks and nodata included."""

import numpy as np
import pytest

from rayvit.encode.merge import MERGERS, Contribution, merge
from rayvit.encode.model import ModelSpec, build_model, model_info
from rayvit.encode.stages.device import DeviceConfig, encode_array, encode_block, to_device, to_float
from rayvit.grid import Tiling


def reference(model, info, cfg, task, pixels, valid):
    """Each tile of the task encoded alone (numpy in, numpy out), cropped, merged by numpy."""
    t, b = cfg.tiling, task.block
    row0, col0 = task.window[:2]
    contributions = []
    for iy in task.tile_rows:
        for ix in task.tile_cols:
            tile = t.tile(iy, ix)
            r, c = tile.row - row0, tile.col - col0
            feats, fvalid = encode_array(model, info, cfg.spec, pixels[None, :, r:r + tile.rows, c:c + tile.cols],
                                         valid[None, r:r + tile.rows, c:c + tile.cols].astype(bool),
                                         cfg.mean, cfg.std)
            r0, r1, c0, c1 = t.tile_span(iy, ix)
            y0, y1, x0, x1 = max(r0, b.row), min(r1, b.row + b.rows), max(c0, b.col), min(c1, b.col + b.cols)
            if y1 <= y0 or x1 <= x0:
                continue
            oy, ox = t.y.feature_offset(iy), t.x.feature_offset(ix)
            contributions.append(Contribution(t.tile_index(iy, ix), y0 - b.row, x0 - b.col,
                                              feats[0][:, y0 - oy:y1 - oy, x0 - ox:x1 - ox],
                                              fvalid[0][y0 - oy:y1 - oy, x0 - ox:x1 - ox],
                                              (y0 - oy, x0 - ox), t.tile_feature_shape))
    return merge((info.num_features, b.rows, b.cols), contributions, cfg.merge)


@pytest.mark.parametrize("method", sorted(MERGERS))
def test_a_block_equals_its_tiles_encoded_alone_and_merged_by_numpy(method):
    spec = ModelSpec("rayvit_patchpos_p4", 2, (16, 16), pretrained=False)
    model = build_model(spec)
    info = model_info(model, spec)
    tiling = Tiling.create(50, 70, (16, 16), (8, 8), (4, 4), block_size=5, center=method == "center")
    cfg = DeviceConfig(spec, tiling, mean=(100.0, 3.0), std=(7.0, 2.0), merge=method, batch_size=3)
    rng = np.random.default_rng(0)
    for task in tiling.block_tasks():
        row, col, rows, cols = task.window
        pixels = rng.integers(0, 60000, size=(2, rows, cols)).astype(np.uint16)   # native dtype
        valid = np.ones((rows, cols), np.uint8)
        valid[max(0, 50 - row):] = 0          # past the raster: padding
        valid[:, max(0, 70 - col):] = 0
        valid[3:9, 2:11] = 0                  # a nodata hole
        got, got_valid, n = encode_block(model, info, cfg, task, pixels, valid)
        want, want_valid = reference(model, info, cfg, task, pixels, valid)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_valid.astype(bool), want_valid)
        assert got.dtype == np.float32 and n <= task.n_tiles


def test_a_vit_block_matches_tile_by_tile_encoding_and_float16_is_a_cast():
    spec = ModelSpec("vit_tiny_patch16_224", 3, (32, 32), pretrained=False)
    model = build_model(spec)
    info = model_info(model, spec)
    tiling = Tiling.create(64, 96, (32, 32), (32, 32), (16, 16), block_size=None, center=False)
    cfg = DeviceConfig(spec, tiling, mean=(0.0,) * 3, std=(255.0,) * 3, merge="first", batch_size=4)
    (task,) = tiling.block_tasks()
    assert task.n_tiles == 6 and tiling.redundancy() == 0
    pixels = np.random.default_rng(1).integers(0, 255, size=(3, 64, 96)).astype(np.uint8)
    valid = np.ones((64, 96), np.uint8)
    got, _, _ = encode_block(model, info, cfg, task, pixels, valid)
    want, _ = reference(model, info, cfg, task, pixels, valid)
    # batches of 4 + 2 tiles vs 6 calls of 1: torch's matmul blocking may change the last bits
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    half, _, _ = encode_block(model, info, DeviceConfig(**{**cfg.__dict__, "dtype": "float16"}), task, pixels, valid)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, got.astype(np.float16))


def test_unsigned_pixels_keep_their_values_on_the_device():
    for dtype, top in (("uint16", 65535), ("uint32", 2**32 - 1), ("uint8", 255), ("int16", -32768)):
        a = np.array([[0, 1, top]], dtype=dtype)
        assert to_float(to_device(a, "cpu"), a.dtype).tolist() == a.astype(np.float32).tolist()


@pytest.mark.parametrize("size,stride", [((16, 16), (16, 16)), ((16, 16), (8, 8)), ((24, 24), (8, 8)),
                                         ((32, 16), (16, 4))])
@pytest.mark.parametrize("method", sorted(MERGERS))
def test_a_raster_read_and_encoded_block_by_block_equals_tiling_by_brute_force(tmp_path, size, stride, method):
    """The read and device stages in process over every block of a planned encode (a real
    GeoTIFF with a nodata hole, uneven sizes) assemble exactly the brute-force tiling: every
    tile painted onto the feature grid and merged. Through Ray, test_encode.py checks the
    wiring once per kind of tiling."""
    from bruteforce import tiled_features
    from conftest import seeded_image, write_raster

    from rayvit.encode.plan import EncodeOptions, plan_encode
    from rayvit.encode.stages.read import read_window

    data = seeded_image((3, 50, 70), seed=1)
    data[:, 10:14, 20:30] = 255
    path = write_raster(tmp_path / "scene.tif", data, nodata=255)
    plan = plan_encode([path], EncodeOptions(model="rayvit_patchpos_p4", pretrained=False, size=size,
                                             stride=stride, merge=method, block_size=5, normalize="none"))
    cfg = DeviceConfig(plan.spec, plan.tiling, plan.mean, plan.std, plan.merge, batch_size=plan.batch_size)
    model = build_model(plan.spec)
    got = np.full((plan.info.num_features, plan.feature_grid.height, plan.feature_grid.width), np.nan, np.float32)
    for task in plan.block_tasks():
        b = task.block
        features, valid, _ = encode_block(model, plan.info, cfg, task, *read_window(plan.mosaic, plan.tiling,
                                                                                       task.window))
        got[:, b.row:b.row + b.rows, b.col:b.col + b.cols] = np.where(valid.astype(bool), features, np.nan)
    want = tiled_features(data.astype(np.float64), ~(data == 255).any(axis=0), size, stride, 4, method)
    np.testing.assert_array_equal(got, want)


def test_blended_merges_lower_the_seam_where_tiles_meet_on_a_smooth_input(tmp_path):
    """A smooth ramp encoded with overlapping tiles by a model whose features depend on the
    place in the tile (``rayvit_patchpos_p4``: patch mean + in-tile position, the edge effect
    of a ViT in its purest form): the largest feature jump between neighbouring columns, a
    seam, is ~1.44 for ``center`` and ``mean`` and falls by a third with the Hann and Gaussian
    windows, which weigh each tile's edges least."""
    from conftest import write_raster

    from rayvit.encode.plan import EncodeOptions, plan_encode
    from rayvit.encode.stages.read import read_window

    yy, xx = np.mgrid[0:96, 0:256]
    ramp = np.stack([100 + 0.3 * xx + 20 * np.sin(yy / 15), 120 + 0.2 * yy, 90 + 30 * np.cos(xx / 40)])
    path = write_raster(tmp_path / "smooth.tif", ramp.astype(np.uint8))

    def seam(method):
        plan = plan_encode([path], EncodeOptions(model="rayvit_patchpos_p4", pretrained=False, size=32, stride=16,
                                                 merge=method, normalize="none"))
        cfg = DeviceConfig(plan.spec, plan.tiling, plan.mean, plan.std, plan.merge, batch_size=plan.batch_size)
        model, g = build_model(plan.spec), plan.feature_grid
        out = np.zeros((plan.info.num_features, g.height, g.width), np.float32)
        for task in plan.block_tasks():
            b = task.block
            features, _, _ = encode_block(model, plan.info, cfg, task,
                                          *read_window(plan.mosaic, plan.tiling, task.window))
            out[:, b.row:b.row + b.rows, b.col:b.col + b.cols] = features
        return np.abs(np.diff(out, axis=2)).mean(axis=(0, 1)).max()

    seams = {method: seam(method) for method in ("center", "mean", "hann", "gaussian")}
    for blend in ("hann", "gaussian"):
        assert seams[blend] < 0.75 * min(seams["center"], seams["mean"]), seams
