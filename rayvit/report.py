"""Quicklook PNGs and colour palettes (the palette also becomes the GDAL colour table)."""

from __future__ import annotations

import colorsys

import numpy as np
import rasterio
from PIL import Image

MAX_SIDE = 1024


def palette(n: int) -> dict[int, tuple[int, int, int, int]]:
    """``n`` distinct colours: hues spaced by the golden ratio, alternating lightness."""
    colours = {}
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        light, sat = (0.45, 0.75) if i % 2 == 0 else (0.6, 0.6)
        r, g, b = colorsys.hls_to_rgb(h, light, sat)
        colours[i] = (int(r * 255), int(g * 255), int(b * 255), 255)
    return colours


def _read_small(path: str):
    with rasterio.open(path) as ds:
        scale = max(ds.width, ds.height) / MAX_SIDE
        shape = (ds.count, max(1, int(ds.height / max(scale, 1))), max(1, int(ds.width / max(scale, 1))))
        data = ds.read(out_shape=shape, masked=True, resampling=rasterio.enums.Resampling.nearest)
    return data


def quicklook(path: str, png: str, categorical: bool = False, colormap: dict | None = None) -> None:
    """First three bands as RGB (2-98 % stretch), or labels through ``colormap``."""
    data = _read_small(path)
    mask = np.ma.getmaskarray(data).any(axis=0)
    if categorical:
        labels = np.ma.getdata(data[0]).astype(np.int64)
        lut = np.zeros((int(labels.max()) + 1 if labels.size else 1, 4), np.uint8)
        for k, colour in (colormap or {}).items():
            if k < len(lut):
                lut[k] = colour
        rgba = lut[np.clip(labels, 0, len(lut) - 1)]
        rgba[mask] = 0
    else:
        bands = [data[min(i, data.shape[0] - 1)] for i in range(3)]
        rgba = np.zeros(data.shape[1:] + (4,), np.uint8)
        for i, band in enumerate(bands):
            values = np.ma.getdata(band)[~mask]
            lo, hi = np.percentile(values, (2, 98)) if values.size else (0, 1)
            scaled = (np.ma.getdata(band).astype(np.float64) - lo) / max(hi - lo, 1e-12) * 255
            rgba[..., i] = np.clip(np.nan_to_num(scaled), 0, 255)
        rgba[..., 3] = np.where(mask, 0, 255)
    Image.fromarray(rgba, "RGBA").save(png)
