"""End-to-end encode through real Ray, real timm models and real GeoTIFFs."""

import math

import numpy as np
import pytest
import rasterio
from bruteforce import tiled_features
from conftest import read, seeded_image, write_raster
from rasterio.transform import from_origin

from rayvit import encode

pytestmark = pytest.mark.usefixtures("ray_local")
FAST = dict(pretrained=False, progress=False, normalize="none")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """50 x 70 px, 3 bands, a nodata hole: sizes that are multiples of nothing in particular."""
    data = seeded_image((3, 50, 70), seed=1)
    data[:, 10:14, 20:30] = 255
    path = write_raster(tmp_path_factory.mktemp("scene") / "scene.tif", data, nodata=255)
    return path, data, ~(data == 255).any(axis=0)


# Every merge method at every size/stride case is checked exactly in process
# (tests/encode/stages/test_device.py); through Ray, the wiring once per kind of tiling.
@pytest.mark.parametrize("size,stride,method", [((16, 16), (16, 16), "first"), ((32, 16), (16, 4), "center"),
                                                ((24, 24), (8, 8), "mean")])
def test_round_trip_tiling_and_merge_are_exact(scene, tmp_path, size, stride, method):
    path, data, valid = scene
    r = encode(path, tmp_path / "out", model="rayvit_patchpos_p4", size=size, stride=stride,
               merge=method, block_size=5, **FAST)
    got, profile, _, desc = read(r.output)
    expected = tiled_features(data.astype(np.float64), valid, size, stride, 4, method)
    np.testing.assert_array_equal(got, expected)
    assert profile["nodata"] is not None and math.isnan(profile["nodata"])
    assert desc[0] == "feature_0001" and len(desc) == 5


def test_georeferencing_is_the_input_extent_on_the_feature_grid(scene, tmp_path):
    path, data, _ = scene
    r = encode(path, tmp_path / "o", model="rayvit_patchmean_p4", size=16, **FAST)
    with rasterio.open(path) as src, rasterio.open(r.output) as out:
        assert out.crs == src.crs
        assert out.transform == from_origin(src.bounds.left, src.bounds.top, 40.0, 40.0)
        assert (out.width, out.height) == (math.ceil(70 / 4), math.ceil(50 / 4))
        # covers the extent exactly, snapped outward to the feature grid (< 1 feature pixel)
        assert out.bounds.left == src.bounds.left and out.bounds.top == src.bounds.top
        assert 0 <= out.bounds.right - src.bounds.right < 40
        assert 0 <= src.bounds.bottom - out.bounds.bottom < 40


def test_output_is_the_same_across_actors_and_block_order(scene, tmp_path):
    """A random-weight ViT: overlapping tiles really differ, so the merge order matters. Each
    block's batches depend on the block alone, so actor count and order change nothing."""
    path, _, _ = scene
    common = dict(model="vit_tiny_patch16_224", size=32, stride=16, merge="mean", batch_size=8, **FAST)
    # one actor writing one COG, and two actors writing blocks (a VRT) in whatever order
    # they finish: the same features to the bit
    runs = [dict(actors=1, block_size=3), dict(actors=2, block_size=3, blocks=True)]
    outs = [read(encode(path, tmp_path / f"o{i}", **common, **extra).output)[0] for i, extra in enumerate(runs)]
    np.testing.assert_array_equal(outs[1], outs[0])
    # another block or batch size batches the tiles otherwise: torch's matmul blocking may
    # change the last bits, nothing more (both are part of the run's fingerprint)
    for i, extra in enumerate([dict(block_size=256), dict(block_size=3, batch_size=3)]):
        r = encode(path, tmp_path / f"b{i}", **{**common, **extra})
        np.testing.assert_allclose(read(r.output)[0], outs[0], rtol=1e-5, atol=1e-5)


def test_blocks_open_as_one_raster_through_the_tile_index_and_the_vrt(scene, tmp_path, monkeypatch):
    """A block product's entry point is its GTI tile index, which GDAL opens as one raster
    (size, georeferencing, band names and nodata as the single COG's), and rayvit reads it
    block by block through the index, on the product's grid; the VRT is written beside it
    only while it lists at most VRT_SOURCES blocks x bands."""
    from rayvit.analysis.source import open_input
    from rayvit.io import writer

    path, _, _ = scene
    one = encode(path, tmp_path / "one", model="rayvit_patchmean_p4", size=16, **FAST)
    blk = encode(path, tmp_path / "blk", model="rayvit_patchmean_p4", size=16, blocks=True,
                 block_size=4, **FAST)
    assert blk.output == str(tmp_path / "blk" / "features.gti.gpkg")
    a, pa, ta, da = read(one.output)
    for product in (blk.output, tmp_path / "blk" / "features.vrt"):
        b, pb, tb, db = read(product)
        np.testing.assert_array_equal(a, b)
        assert ta == tb and pa["crs"] == pb["crs"] and da == db and math.isnan(pb["nodata"])
    assert len(list((tmp_path / "blk" / "blocks").glob("block_*.tif"))) == 4 * 5 - 0
    mosaic = open_input(blk.output)
    assert len(mosaic.sources) == 20 and mosaic.grid.width == pa["width"] and mosaic.grid.height == pa["height"]
    data, valid = mosaic.read(0, 0, pa["height"], pa["width"])
    np.testing.assert_array_equal(np.where(valid, data, np.nan), a)
    # above the limit: the index alone (a VRT would list every block x band)
    monkeypatch.setattr(writer, "VRT_SOURCES", 20 * pa["count"] - 1)
    big = encode(path, tmp_path / "big", model="rayvit_patchmean_p4", size=16, blocks=True, block_size=4, **FAST)
    assert not (tmp_path / "big" / "features.vrt").exists()
    np.testing.assert_array_equal(read(big.output)[0], a)


def test_all_nodata_tiles_are_skipped_and_stay_nodata(tmp_path):
    data = seeded_image((2, 64, 64))
    data[:, :, 32:] = 0
    path = write_raster(tmp_path / "half.tif", data, nodata=0)
    r = encode(path, tmp_path / "o", model="rayvit_patchmean_p4", size=16, block_size=2, **FAST)
    out = read(r.output)[0]
    assert np.isnan(out[:, :, 8:]).all() and not np.isnan(out[:, :, :8]).any()


def test_float16_output_and_sidecar_provenance(scene, tmp_path):
    import json
    path, _, _ = scene
    r = encode(path, tmp_path / "o", model="rayvit_patchmean_p4", size=16, stride=8, dtype="float16",
               bands=(3, 1), **FAST)
    with rasterio.open(r.output) as ds:
        assert ds.tags(1, "IMAGE_STRUCTURE").get("NBITS") == "16" and ds.count == 2
        assert ds.profile["tiled"] and ds.profile["compress"] == "zstd"
    side = json.loads((tmp_path / "o" / "features.json").read_text())
    for key in ("inputs", "model", "weights_sha256", "layer", "normalization", "bands", "size", "stride",
                "patch_footprint", "crs", "transform", "dtype", "rayvit_version", "run_id"):
        assert key in side
    assert side["bands"] == [3, 1] and side["patch_footprint"] == [4, 4] and side["stride"] == [8, 8]
    assert side["merge"] == "center" and side["dtype"] == "float16"


def test_normalisation_modes(scene, tmp_path):
    path, data, valid = scene
    kw = dict(model="rayvit_patchmean_p2", size=16, pretrained=False, progress=False, bands=(1,))
    stats = read(encode(path, tmp_path / "s", **kw).output)[0]
    user = read(encode(path, tmp_path / "u", mean=(10.0,), std=(2.0,), **kw).output)[0]
    px = data[0][valid].astype(np.float64)
    # stats: the small raster fits in the sample, so the mean/std are exact
    full = (data[0, :2, :2].astype(np.float64) - px.mean()) / px.std()
    assert stats[0, 0, 0] == pytest.approx(full.mean(), rel=1e-5)
    assert user[0, 0, 0] == pytest.approx(((data[0, :2, :2] - 10.0) / 2.0).mean(), rel=1e-6)


def test_real_iamap_raster(iamap, tmp_path):
    r = encode(str(iamap / "test.tif"), tmp_path / "o", model="vit_tiny_patch16_224", size=224,
               pretrained=False, progress=False)
    out, profile, transform, _ = read(r.output)
    # 968 x 379 px at 10 m, patch 16: ceil(968/16) x ceil(379/16) = 61 x 24 feature pixels of 160 m
    assert out.shape == (192, 24, 61)
    with rasterio.open(iamap / "test.tif") as src:
        assert transform == from_origin(src.bounds.left, src.bounds.top, 160.0, 160.0)
        m = src.read_masks(1)
    feature_has_valid = np.zeros((24 * 16, 61 * 16), bool)
    feature_has_valid[:379, :968] = m > 0
    any_valid = feature_has_valid.reshape(24, 16, 61, 16).any(axis=(1, 3))
    np.testing.assert_array_equal(~np.isnan(out[0]), any_valid)
    assert r.tiles == 2 * 5


def test_bench_process_monitor_attributes_cpu_and_memory(scene, tmp_path):
    """`rayvit bench`'s monitor: the encoder actors' CPU is counted as theirs, the total is
    bounded by the machine, and peak memory is sampled."""
    import os
    import time

    from rayvit.bench import ProcessMonitor
    from rayvit.bench.monitor import wait_encoders_gone
    path, _, _ = scene
    wait_encoders_gone()        # this encode starts its own actor, as a command does
    with ProcessMonitor() as mon:
        t0 = time.perf_counter()
        encode(path, tmp_path / "o", model="vit_tiny_patch16_224", size=16, actors=1, **FAST)
        elapsed = time.perf_counter() - t0
    cpu = mon.cpu_by_role()
    assert set(cpu) == set(ProcessMonitor.ROLES)
    # the actor imported torch and built a ViT: at least a few tenths of a CPU-second
    assert cpu["device actors"] > 0.3 and cpu["driver"] > 0
    assert sum(cpu.values()) <= os.cpu_count() * elapsed + 1.0
    assert mon.driver > 0 and mon.tree > 0


def test_a_node_whose_gpu_torch_cannot_see_is_an_error_naming_the_node():
    """The check every device actor makes when it loads a model onto a GPU its node advertised."""
    import ray
    import torch

    from rayvit.encode.model import ModelSpec
    from rayvit.encode.stages.device import DeviceConfig, DeviceStage
    from rayvit.errors import InputError
    from rayvit.grid import Tiling
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    cfg = DeviceConfig(ModelSpec("rayvit_patchmean_p4", 3, (16, 16), pretrained=False),
                       Tiling.create(32, 32, (16, 16), (16, 16), (4, 4), None, False), (0.0,) * 3, (1.0,) * 3,
                       device="cuda")
    with pytest.raises(InputError, match=rf"Ray node {ray.util.get_node_ip_address()} advertises a GPU, "
                                         "but torch there cannot see one"):
        DeviceStage().load(cfg)


def _device_actor_pids(timeout=0.0, gone=False):
    """PIDs of this process's device actors (Ray titles their processes ``ray::DeviceActor``);
    with ``gone``, after waiting up to ``timeout`` s for none to be left."""
    import time

    import psutil
    deadline = time.monotonic() + timeout
    while True:
        pids = set()
        for proc in psutil.Process().children(recursive=True):
            try:
                if "DeviceActor" in proc.cmdline()[0]:
                    pids.add(proc.pid)
            except (psutil.Error, IndexError):
                pass
        if not (gone and pids) or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)


def test_device_actors_outlive_an_encode_reload_for_another_model_and_other_stages_release_them(scene, tmp_path):
    from rayvit import reduce
    from rayvit.encode.stages.pool import release_encoders
    path, _, _ = scene
    release_encoders()
    assert _device_actor_pids(timeout=30, gone=True) == set()
    kw = dict(size=16, block_size=4, **FAST)            # 4 x 5 blocks: every actor of the pool works
    a = encode(path, tmp_path / "a", model="rayvit_patchmean_p4", **kw)
    started = _device_actor_pids()
    assert started and a.timings["stage_sums_s"]["model_load_max"] > 0
    b = encode(path, tmp_path / "b", model="rayvit_patchmean_p4", **kw)
    assert _device_actor_pids() == started and b.timings["stage_sums_s"]["model_load_max"] == 0
    assert read(tmp_path / "b" / "features.tif")[0].tobytes() == read(tmp_path / "a" / "features.tif")[0].tobytes()
    # the same actors load another model, and give what new actors give
    encode(path, tmp_path / "c", model="rayvit_patchmean_p8", **kw)
    assert _device_actor_pids() == started
    release_encoders()
    assert _device_actor_pids(timeout=30, gone=True) == set()
    encode(path, tmp_path / "d", model="rayvit_patchmean_p8", **kw)
    assert read(tmp_path / "d" / "features.tif")[0].tobytes() == read(tmp_path / "c" / "features.tif")[0].tobytes()
    # any other stage frees the actors' CPUs first
    assert _device_actor_pids()
    reduce(str(tmp_path / "a" / "features.tif"), str(tmp_path / "pca"), progress=False)
    assert _device_actor_pids(timeout=30, gone=True) == set()


def test_the_reports_imagery_view_is_sampled_by_the_read_tasks_not_read_again(scene, tmp_path, monkeypatch):
    """The encode's report shows the input imagery that its read tasks sampled (nothing reads
    the inputs after the encode): the same JPEG as reading the inputs again would give."""
    import base64
    import json
    import re

    from rayvit.report import html, quicklook

    def read_again(*args):
        raise AssertionError("the report read the inputs again")

    path, _, _ = scene
    monkeypatch.setattr(html, "imagery_view", read_again)
    encode(path, tmp_path / "o", model="rayvit_patchmean_p4", size=16, block_size=2, **FAST)
    page = (tmp_path / "o" / "report.html").read_text()
    shown = re.findall(r"data:image/jpeg;base64,([^\"]+)", page)
    assert len(shown) == 1
    sidecar = json.loads((tmp_path / "o" / "features.json").read_text())
    assert quicklook.imagery_view(sidecar, str(tmp_path / "again.jpg")) == (True, "")
    assert base64.b64decode(shown[0]) == (tmp_path / "again.jpg").read_bytes()
