"""Shared fixtures: one local Ray for the session, tiny seeded rasters, real IAMAP data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # a hub lookup fails at once, offline
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_RECORD_ACTOR_TASK_LOGGING", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import rasterio  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IAMAP = ROOT.parent / "shared" / "data" / "iamap"
UTM = "EPSG:32633"
X0, Y0, RES = 500000.0, 4000000.0, 10.0


def write_raster(path, data, transform=None, crs=UTM, nodata=None, **profile):
    """Write ``data`` (bands, rows, cols) as a GeoTIFF; returns the path as str."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    transform = transform or from_origin(500000.0, 4000000.0, 10.0, 10.0)
    with rasterio.open(path, "w", driver=profile.pop("driver", "GTiff"), width=data.shape[2],
                       height=data.shape[1], count=data.shape[0], dtype=data.dtype, crs=crs,
                       transform=transform, nodata=nodata, **profile) as dst:
        dst.write(data)
    return str(path)


def cut_into_four(tmp_path, data, nodata=None):
    """Cut ``data`` into 4 files with uneven cuts; returns their paths."""
    _, h, w = data.shape
    ry, rx = 37, 61
    paths = []
    for i, (r0, r1) in enumerate(((0, ry), (ry, h))):
        for j, (c0, c1) in enumerate(((0, rx), (rx, w))):
            paths.append(write_raster(tmp_path / f"part_{i}{j}.tif", data[:, r0:r1, c0:c1],
                                      from_origin(X0 + c0 * RES, Y0 - r0 * RES, RES, RES),
                                      nodata=nodata))
    return paths


def seeded_image(shape, seed=0, high=200, dtype="uint8"):
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from rayvit.runtime import init_ray
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    init_ray()
    yield ray
    ray.shutdown()


@pytest.fixture
def iamap():
    if not IAMAP.is_dir():
        pytest.skip(f"real IAMAP data not found at {IAMAP} (../shared/data/iamap)")
    return IAMAP


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds.transform, ds.descriptions


def run_cli(*args, timeout=600, **kwargs):
    """Run the real ``rayvit`` console script in a fresh process."""
    exe = Path(sys.executable).with_name("rayvit")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
