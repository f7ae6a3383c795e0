"""TESSERA embedding tiles in their published local layout, read as analysis inputs.

The layout is the one ``geotessera`` (github.com/ucam-eo/geotessera: ``registry.py``'s
directory names and ``tile_to_embedding_path``, ``core.py``'s ``dequantize_embedding``)
downloads to and reads from::

    ROOT/global_0.1_degree_representation/YEAR/grid_LON_LAT/grid_LON_LAT.npy         int8 (H, W, 128)
    ROOT/global_0.1_degree_representation/YEAR/grid_LON_LAT/grid_LON_LAT_scales.npy  float32 (H, W) or (H, W, 128)
    ROOT/global_0.1_degree_tiff_all/grid_LON_LAT.tiff     the tile's landmask: its CRS (UTM) and transform

A value is ``code * scale`` (per pixel, or per pixel and band); a pixel whose scale is 0 or
not finite holds no embedding (geotessera's own comparisons keep ``scales > 0``). An input
named ``tessera:PATH`` (or any ``.npy`` with its ``_scales.npy`` beside it) is such a tile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError

PREFIX = "tessera:"
EMBEDDINGS_DIR = "global_0.1_degree_representation"
LANDMASKS_DIR = "global_0.1_degree_tiff_all"


def tessera_path(path: str) -> tuple[str, bool]:
    """``(path, a TESSERA tile)`` of an input named ``tessera:PATH``, or a ``.npy`` path."""
    path = str(path)
    if path.startswith(PREFIX):
        return path[len(PREFIX):], True
    return path, path.endswith(".npy") and not path.endswith("_scales.npy")


def scales_of(path: str) -> str:
    return path[:-len(".npy")] + "_scales.npy"


def landmask_of(path: str) -> str:
    """``ROOT/global_0.1_degree_tiff_all/grid_LON_LAT.tiff`` of ``ROOT/.../YEAR/grid_LON_LAT/grid_LON_LAT.npy``."""
    grid = os.path.basename(path)[:-len(".npy")]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path)))))
    return os.path.join(root, LANDMASKS_DIR, f"{grid}.tiff")


def dequantize(codes: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``codes (H, W, 128) int8`` and ``scales (H, W)`` or ``(H, W, 128)`` -> ``(values
    (128, H, W) float32, valid (H, W))``: ``code * scale`` (as geotessera, in float32), valid
    where every scale is finite and > 0; invalid pixels are 0."""
    s = scales[..., None] if scales.ndim == codes.ndim - 1 else scales
    ok = (np.isfinite(s) & (s > 0)).all(axis=-1)
    values = codes.astype(np.float32) * s.astype(np.float32)
    values[~ok] = 0
    return np.moveaxis(values, -1, 0), ok


@dataclass(frozen=True)
class TesseraTile:
    """A TESSERA tile as the analysis stages read rasters (``grid``, ``count``, ``bands``,
    ``dtype``, ``sources``, ``read``); its arrays are memory-mapped, never read whole."""

    path: str
    grid: object
    bands: tuple[int, ...]
    dtype: str = "float32"
    sources: tuple = ()

    @classmethod
    def open(cls, path: str, bands: Sequence[int] | None = None) -> "TesseraTile":
        import rasterio

        from .mosaic import Grid

        landmask = landmask_of(path)
        for need, what in ((path, "embedding"), (scales_of(path), "scales"), (landmask, "landmask")):
            if not os.path.exists(need):
                raise InputError(f"TESSERA tile {path!r}: its {what} file {need!r} is missing. The layout is "
                                 f"ROOT/{EMBEDDINGS_DIR}/YEAR/grid_LON_LAT/grid_LON_LAT.npy with _scales.npy beside "
                                 f"it and ROOT/{LANDMASKS_DIR}/grid_LON_LAT.tiff (as geotessera downloads them).")
        codes, scales = np.load(path, mmap_mode="r"), np.load(scales_of(path), mmap_mode="r")
        with rasterio.open(landmask) as ds:
            grid = Grid(ds.crs.to_wkt(), tuple(ds.transform)[:6], ds.width, ds.height)
        if codes.ndim != 3 or codes.dtype != np.int8 or codes.shape[:2] != (grid.height, grid.width) \
                or scales.shape[:2] != codes.shape[:2]:
            raise InputError(f"TESSERA tile {path!r}: expected int8 (H, W, bands) codes and (H, W) scales on "
                             f"its landmask's {grid.height} x {grid.width} grid; found {codes.dtype} "
                             f"{codes.shape} and scales {scales.shape}.")
        d = codes.shape[2]
        chosen = tuple(bands) if bands else tuple(range(1, d + 1))
        if not all(1 <= b <= d for b in chosen):
            raise InputError(f"--bands {list(chosen)} is out of range for {path!r}, which has {d} bands.")
        return cls(path, grid, chosen)

    @property
    def count(self) -> int:
        return len(self.bands)

    def read(self, row: int, col: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """``(data (bands, rows, cols) float32, valid (rows, cols))``; past the grid: invalid, 0."""
        out, valid = np.zeros((self.count, rows, cols), np.float32), np.zeros((rows, cols), bool)
        h, w = max(0, min(rows, self.grid.height - row)), max(0, min(cols, self.grid.width - col))
        if h and w:
            codes = np.load(self.path, mmap_mode="r")[row:row + h, col:col + w]
            scales = np.load(scales_of(self.path), mmap_mode="r")[row:row + h, col:col + w]
            values, ok = dequantize(np.asarray(codes), np.asarray(scales))
            out[:, :h, :w] = values[np.array(self.bands) - 1]
            valid[:h, :w] = ok
        return out, valid
