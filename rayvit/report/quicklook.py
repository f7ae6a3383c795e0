"""Quicklook images and colour palettes (the palette also becomes the GDAL colour table).

A quicklook is read at most :data:`MAX_SIDE` px on its long side, and at most
:data:`MAX_VALUES` values in all (bands x pixels: a 768-band feature raster is read at about
209 x 209 px), and, when smaller, enlarged with nearest neighbour to at least
:data:`MIN_SIDE` px, so that a 80 x 80 feature grid is viewable and its pixels stay sharp.

A report is written by the driver at commit, so what it holds and decodes must not grow with
the run (reading a 896 x 896 x 768 product whole took the driver 12 GB and 36 CPU-ms per tile):

* a feature raster's principal components are fitted on :data:`COMPONENT_BANDS` evenly
  spaced bands: blocks are band-interleaved, so only those bands are decoded (all 768 bands
  of a 4096-tile product: 6.5 CPU-s, ~1.6 ms per tile, as much as the whole write stage);
* the input imagery view is drawn only when the inputs hold at most
  :data:`IMAGERY_MAX_PIXELS` pixels: GDAL decodes every source tile for a decimated read (a
  14336 x 14336 4-band input took 27 CPU-s); the report says so otherwise.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from dataclasses import replace

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp, Resampling

from ..io import sources, storage

MAX_SIDE = 1024
MIN_SIDE = 512
MAX_VALUES = 2**25
COMPONENT_BANDS = 32
IMAGERY_MAX_PIXELS = 2**26


def palette(n: int) -> dict[int, tuple[int, int, int, int]]:
    """``n`` distinct colours: hues spaced by the golden ratio, alternating lightness."""
    colours = {}
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        light, sat = (0.45, 0.75) if i % 2 == 0 else (0.6, 0.6)
        r, g, b = colorsys.hls_to_rgb(h, light, sat)
        colours[i] = (int(r * 255), int(g * 255), int(b * 255), 255)
    return colours


def small_shape(height: int, width: int, bands: int = 1) -> tuple[int, int]:
    """The shape a raster is read at for a quicklook: at most MAX_SIDE on the long side and
    MAX_VALUES values over all ``bands``."""
    scale = max(max(height, width) / MAX_SIDE, math.sqrt(height * width * bands / MAX_VALUES))
    if scale <= 1:
        return height, width
    return max(1, int(height / scale)), max(1, int(width / scale))


def enlarge(rgba: np.ndarray) -> np.ndarray:
    """Repeat pixels (nearest neighbour) until the long side is at least MIN_SIDE."""
    factor = math.ceil(MIN_SIDE / max(rgba.shape[:2]))
    return rgba if factor <= 1 else rgba.repeat(factor, axis=0).repeat(factor, axis=1)


def spread_bands(count: int, n: int) -> list[int]:
    """At most ``n`` of bands 1..``count``, evenly spaced, first and last included."""
    if count <= n:
        return list(range(1, count + 1))
    return sorted({round(1 + i * (count - 1) / (n - 1)) for i in range(n)})


def read_small(path: str, max_bands: int | None = None) -> np.ma.MaskedArray:
    """The bands of a raster (a path or an object-store URL; at most ``max_bands``, evenly
    spaced), decimated (nearest) to at most MAX_SIDE px and MAX_VALUES values, masked; bands
    with a scale/offset (int8 features) as floats."""
    from ..io import chunked
    from ..io.mosaic import open_raster

    if chunked.is_zarr(path):           # sharded Zarr: zarr-python reads it (GDAL 3.10 cannot)
        z = chunked.ZarrRaster.open(path)
        bands = spread_bands(z.count, max_bands or z.count)
        z = replace(z, bands=tuple(bands))
        return np.ma.masked_invalid(z.decimated(*small_shape(z.grid.height, z.grid.width, len(bands))))
    with open_raster(path, storage.storage_options(path)) as ds:
        bands = spread_bands(ds.count, max_bands or ds.count)
        data = ds.read(bands, out_shape=(len(bands), *small_shape(ds.height, ds.width, len(bands))),
                       masked=True, resampling=Resampling.nearest)
        index = np.array(bands) - 1
        scales, offsets = np.array(ds.scales)[index], np.array(ds.offsets)[index]
    if (scales != 1).any() or (offsets != 0).any():
        data = data.astype(np.float32) * scales[:, None, None] + offsets[:, None, None]
    return data


def stretch(bands: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(3, h, w)`` values -> ``(h, w, 4)`` uint8 RGBA, each band stretched 2-98 %."""
    rgba = np.zeros(bands.shape[1:] + (4,), np.uint8)
    for i in range(3):
        band = np.asarray(bands[min(i, len(bands) - 1)], dtype=np.float64)
        values = band[~mask]
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, (2, 98)) if values.size else (0, 1)
        rgba[..., i] = np.clip(np.nan_to_num((band - lo) / max(hi - lo, 1e-12) * 255), 0, 255)
    rgba[..., 3] = np.where(mask, 0, 255)
    return rgba


def labels_rgba(labels: np.ndarray, mask: np.ndarray, colormap: dict) -> np.ndarray:
    lut = np.zeros((max(int(labels.max()) + 1 if labels.size else 1, max(colormap, default=0) + 1), 4), np.uint8)
    for k, colour in colormap.items():
        lut[k] = colour
    rgba = lut[np.clip(labels, 0, len(lut) - 1)]
    rgba[mask] = 0
    return rgba


def principal_rgb(data: np.ma.MaskedArray, mask: np.ndarray, max_pixels: int = 20000) -> np.ndarray:
    """The first three principal components of the valid pixels (a seeded subset fits them),
    as ``(3, h, w)``: a colour view of a many-band feature raster."""
    x = np.ma.getdata(data).reshape(data.shape[0], -1).T
    valid = ~mask.ravel() & np.isfinite(x).all(axis=1)
    out = np.zeros((3, x.shape[0]))
    if valid.sum() >= 2:
        fit = x[valid]
        if len(fit) > max_pixels:
            fit = fit[np.random.default_rng(0).choice(len(fit), max_pixels, replace=False)]
        fit = fit.astype(np.float64)
        mean = fit.mean(axis=0)
        _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
        k = min(3, vt.shape[0])
        rows = np.flatnonzero(valid)
        for i in range(0, len(rows), 8192):     # projected in chunks: no (pixels x bands) float64 copy
            chunk = rows[i:i + 8192]
            out[:k, chunk] = ((x[chunk] - mean) @ vt[:k].T).T
    return out.reshape(3, *data.shape[1:])


def quicklook(path: str, png: str, categorical: bool = False, colormap: dict | None = None,
              components: bool = False, data: np.ma.MaskedArray | None = None) -> None:
    """A PNG of a raster: labels through ``colormap`` (categorical), the first three
    principal components (``components``: feature rasters), or its first three bands
    (2-98 % stretch). ``data``: what :func:`read_small` would read, already sampled (an
    encode's write tasks do: :class:`rayvit.encode.stages.write.FeatureSample`)."""
    if data is None:
        data = read_small(path, COMPONENT_BANDS if components else None)
    mask = np.ma.getmaskarray(data).any(axis=0)
    if categorical:
        rgba = labels_rgba(np.ma.filled(data[0], 0).astype(np.int64), mask, colormap or {})
    else:
        rgba = stretch(principal_rgb(data, mask) if components else np.ma.getdata(data), mask)
    storage.atomic_write(png, lambda tmp: Image.fromarray(enlarge(rgba), "RGBA").save(tmp, format="PNG"))


def sidecar_of(raster: str) -> dict | None:
    """The rayvit sidecar of a product raster (``features.tif`` -> ``features.json``)."""
    path = os.path.splitext(raster)[0] + ".json"
    try:
        if storage.is_local(path):
            with open(storage.local_path(path)) as fh:
                return json.load(fh)
        with storage.fs_for(path).open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def imagery_of(sidecar: dict, depth: int = 6) -> dict | None:
    """The encode sidecar at the root of a chain of products (``input`` -> ... -> ``inputs``),
    which names the imagery; None when the chain is broken (e.g. a raster rayvit did not
    write)."""
    while depth and sidecar:
        if "inputs" in sidecar:
            return sidecar
        sidecar = sidecar_of(sidecar["input"]) if "input" in sidecar else None
        depth -= 1
    return None


def rgb_bands(url: str, bands: list[int]) -> list[int]:
    """Bands to show as red, green, blue: by colour interpretation when the file has it and
    they were encoded, else the first three encoded bands."""
    from ..io.mosaic import open_raster

    with open_raster(url) as ds:
        interp = list(ds.colorinterp)
    picked = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue) if c in interp]
    return picked if len(picked) == 3 and set(picked) <= set(bands) else (list(bands) * 3)[:3]


def imagery_view(encode_sidecar: dict, jpeg: str) -> tuple[bool, str]:
    """A true-colour view of the imagery an encode read, over its feature grid's extent, as
    ``jpeg`` (photographic content: a tenth of a PNG's size): ``(True, "")``, or ``(False,
    why)`` when it cannot be read here (the inputs are gone: why is empty) or would decode
    more than IMAGERY_MAX_PIXELS input pixels."""
    from rasterio.crs import CRS
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window

    from ..io.mosaic import open_raster

    s = encode_sidecar
    grid = s.get("input_grid", {})
    pixels = grid.get("width", 0) * grid.get("height", 0)
    if pixels > IMAGERY_MAX_PIXELS:
        return False, (f"Input imagery not shown: its {pixels / 1e6:.0f} Mpx would all be decoded by the "
                       f"process writing this report (at most {IMAGERY_MAX_PIXELS / 1e6:.0f} Mpx are).")
    view, h, w = view_grid(s["transform"], s["width"], s["height"])
    try:
        bands = rgb_bands(s["inputs"][0], s["bands"])
        out = np.zeros((3, h, w))
        filled = np.zeros((h, w), bool)
        crs = CRS.from_user_input(s["crs"])
        # many files: their sources index, opened by GDAL as one mosaic (its tiles opened in C:
        # 4,096 files in 2.6 s here, against ~10 s opening each one from Python)
        index = sources.existing_index(s["inputs"]) if all(map(storage.is_local, s["inputs"])) else None
        for url in [index] if index else s["inputs"]:
            with open_raster(url) as ds:
                # only the view's pixels under this file: a mosaic of 4,096 files read the whole
                # view 4,096 times
                x0, y0, x1, y1 = transform_bounds(ds.crs, crs, *ds.bounds, densify_pts=21)
                c0, c1 = max(0, math.floor((x0 - view.c) / view.a)), min(w, math.ceil((x1 - view.c) / view.a))
                r0, r1 = max(0, math.floor((y1 - view.f) / view.e)), min(h, math.ceil((y0 - view.f) / view.e))
                if c1 <= c0 or r1 <= r0:
                    continue
                with WarpedVRT(ds, crs=crs, transform=view, width=w, height=h, resampling=Resampling.nearest,
                               add_alpha=ds.nodata is None) as vrt:
                    part = vrt.read(bands, window=Window(c0, r0, c1 - c0, r1 - r0), masked=True)
            here = filled[r0:r1, c0:c1]
            ok = ~np.ma.getmaskarray(part).any(axis=0) & ~here
            out[:, r0:r1, c0:c1][:, ok] = np.ma.getdata(part)[:, ok]
            here |= ok
    except (OSError, rasterio.errors.RasterioError, ValueError, KeyError, IndexError):
        return False, ""
    save_view(out, filled, jpeg)
    return True, ""


def view_grid(transform, width: int, height: int) -> tuple[rasterio.Affine, int, int]:
    """``(transform, height, width)`` of the input imagery view over a feature grid: finer than
    the feature grid, at most MAX_SIDE px on its long side."""
    t = rasterio.Affine(*transform[:6])
    h, w = small_shape(height * 8, width * 8)
    return rasterio.Affine(t.a * width / w, 0, t.c, 0, t.e * height / h, t.f), h, w


def save_view(bands: np.ndarray, filled: np.ndarray, jpeg: str) -> None:
    """``(3, h, w)`` imagery, valid where ``filled``, as a 2-98 % stretched JPEG (no data: white)."""
    rgba = enlarge(stretch(bands, ~filled))
    rgb = np.where(rgba[..., 3:] > 0, rgba[..., :3], 255).astype(np.uint8)
    storage.atomic_write(jpeg, lambda tmp: Image.fromarray(rgb, "RGB").save(tmp, format="JPEG", quality=85))
