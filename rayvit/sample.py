"""Generated sample rasters (seeded): for the quickstart and the benchmarks, not for science."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.transform import from_origin


def make_sample_raster(path: str, height: int, width: int, bands: int = 4, seed: int = 0,
                       crs: str = "EPSG:32633", res: float = 10.0, dtype: str = "uint8") -> str:
    """Write a tiled, compressed GeoTIFF (uint8, or uint16 scaled like reflectance x 10000)
    of a synthetic landscape, written in strips.

    Smooth fields (a sum of a few random sinusoids) plus a per-band offset and noise, so
    features differ between places. Generated strip by strip: memory stays small.
    """
    rng = np.random.default_rng(seed)
    waves = rng.uniform(0.002, 0.02, size=(bands, 3, 2))
    phases = rng.uniform(0, 2 * np.pi, size=(bands, 3))
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype="uint8", crs=crs,
                   transform=from_origin(500000.0, 4100000.0, res, res), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", nodata=0)
    profile["dtype"] = dtype
    gain = 40 if dtype == "uint16" else 1
    strip = 512
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, height, strip):
            rows = min(strip, height - r0)
            yy = np.arange(r0, r0 + rows, dtype=np.float32)[:, None]
            xx = np.arange(width, dtype=np.float32)[None, :]
            out = np.empty((bands, rows, width), dtype)
            for b in range(bands):
                # sin(ay + bx + p) = sin(ay) cos(bx + p) + cos(ay) sin(bx + p): outer products
                field = sum(np.sin(waves[b, k, 0] * yy) * np.cos(waves[b, k, 1] * xx + phases[b, k])
                            + np.cos(waves[b, k, 0] * yy) * np.sin(waves[b, k, 1] * xx + phases[b, k])
                            for k in range(3))
                noise = rng.normal(0, 8, size=(rows, width)).astype(np.float32)
                out[b] = np.clip((128 + 35 * field + noise) * gain, 1, 255 * gain).astype(dtype)
            dst.write(out, window=rasterio.windows.Window(0, r0, width, rows))
    return path
