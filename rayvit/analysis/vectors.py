"""Points and polygons -> the raster pixels they select, with their values.

A point selects the pixel that contains it. A polygon selects every pixel whose centre it
contains (``polygons="all"``), or an area-proportional seeded random sample of those with at
least one per polygon (``polygons="sample"``, IAMAP's behaviour); a polygon too small to
contain a pixel centre selects the pixel under its representative point. Geometries outside
the raster and pixels on nodata are counted, never fatal. Values are read window by window
in Ray tasks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..io import storage
from ..io.mosaic import Mosaic
from .source import BlockSource

WINDOW = 256


@dataclass
class Samples:
    """Selected pixels: one row each, with the index of the geometry that selected it."""

    rows: np.ndarray
    cols: np.ndarray
    feature: np.ndarray          # index of the geometry in the vector file
    values: np.ndarray           # (n, bands) float64
    report: dict = field(default_factory=dict)


def read_vectors(path: str, crs: str, vector_crs: str | None = None):
    """The vector file as a GeoDataFrame in ``crs``; errors name the file and the fix."""
    import geopandas as gpd
    from pyproj import CRS

    if not storage.is_local(path):
        return read_vectors(_download(path), crs, vector_crs)
    if not os.path.exists(path):
        raise InputError(f"vector file {path!r} does not exist.")
    try:
        # GeoParquet through pyarrow: this GDAL build's Parquet driver needs libduckdb
        is_parquet = path.lower().endswith((".parquet", ".geoparquet"))
        gdf = gpd.read_parquet(path) if is_parquet else gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputError(f"vector file {path!r} could not be read ({type(exc).__name__}: {exc}); give a "
                         "GeoPackage, Shapefile, GeoJSON, GeoParquet or zipped shapefile.") from None
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if vector_crs:
        gdf = gdf.set_crs(vector_crs, allow_override=True)
    elif gdf.crs is None:
        raise InputError(f"vector file {path!r} has no CRS; give it with --vector-crs (e.g. EPSG:4326).")
    if len(gdf) == 0:
        raise InputError(f"vector file {path!r} holds no geometry.")
    minx, miny, maxx, maxy = gdf.total_bounds
    declared = CRS.from_user_input(gdf.crs)
    if declared.is_geographic and not (-180 <= minx <= maxx <= 360 and -90 <= miny <= maxy <= 90):
        raise InputError(f"vector file {path!r} declares {declared.to_string()} (degrees) but holds "
                         f"coordinates like ({minx:.0f}, {miny:.0f}), impossible in it: the CRS looks "
                         "wrong. Fix the file's CRS, or give the right one with --vector-crs.")
    out = gdf.to_crs(crs)
    if not np.isfinite(out.total_bounds).all():
        raise InputError(f"vector file {path!r}: its coordinates cannot be projected from "
                         f"{declared.to_string()} to the raster's CRS; the CRS looks wrong (--vector-crs).")
    return out


def check_exists(path: str) -> None:
    """Fail early (before any work, also in dry runs) when a vector file is missing."""
    if not storage.exists(path, storage.storage_options(path)):
        raise InputError(f"vector file {path!r} does not exist; check the path.")


def _download(url: str) -> str:
    """A local copy of a remote vector file and its sidecars (``name.*``: .shp/.dbf/.prj...)."""
    import tempfile

    fs = storage.fs_for(url)
    stem = url.rsplit(".", 1)[0] if "." in url.rsplit("/", 1)[-1] else url
    try:
        parts = [p for p in fs.glob(stem + ".*")]
    except PermissionError:
        raise InputError(f"vector file {url!r}: access was denied; check the credentials.") from None
    if not parts:
        raise InputError(f"vector file {url!r} does not exist.")
    tmp = tempfile.mkdtemp(prefix="rayvit-vectors-")
    for part in parts:
        fs.get_file(part, os.path.join(tmp, part.rsplit("/", 1)[-1]))
    return os.path.join(tmp, url.rsplit("/", 1)[-1])


def _polygon_pixels(geom, transform, height, width):
    """(rows, cols) of the pixels whose centre lies in ``geom`` (clipped to the grid)."""
    from rasterio.features import geometry_mask
    from rasterio.windows import Window, from_bounds
    from rasterio.windows import transform as window_transform

    win = from_bounds(*geom.bounds, transform=transform)
    r0, c0 = max(int(np.floor(win.row_off)), 0), max(int(np.floor(win.col_off)), 0)
    r1 = min(int(np.ceil(win.row_off + win.height)) + 1, height)
    c1 = min(int(np.ceil(win.col_off + win.width)) + 1, width)
    if r1 <= r0 or c1 <= c0:
        return np.zeros(0, int), np.zeros(0, int)
    wt = window_transform(Window(c0, r0, c1 - c0, r1 - r0), transform)
    inside = geometry_mask([geom], out_shape=(r1 - r0, c1 - c0), transform=wt, invert=True)
    rr, cc = np.nonzero(inside)
    return rr + r0, cc + c0


def select_pixels(gdf, mosaic: Mosaic, polygons: str = "all", samples: int = 1000,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Pixels selected by each geometry: ``rows, cols, feature index, report``."""
    if polygons not in ("all", "sample"):
        raise InputError(f"--polygons must be 'all' or 'sample', got {polygons!r}.")
    g = mosaic.grid
    inv = ~g.affine
    rows, cols, feats = [], [], []
    outside = 0
    areas = gdf.geometry.area.to_numpy()
    is_poly = gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()
    total_area = areas[is_poly].sum()
    rng = np.random.default_rng(seed)
    for i, geom in enumerate(gdf.geometry):
        if is_poly[i]:
            rr, cc = _polygon_pixels(geom, g.affine, g.height, g.width)
            if len(rr) == 0:
                p = geom.representative_point()
                rr, cc = _point_pixel(inv, p.x, p.y)
            if polygons == "sample" and len(rr) > 1:
                k = max(1, int(round(samples * areas[i] / total_area)))
                if k < len(rr):
                    keep = np.sort(rng.choice(len(rr), size=k, replace=False))
                    rr, cc = rr[keep], cc[keep]
        else:
            points = [geom] if geom.geom_type == "Point" else list(getattr(geom, "geoms", []))
            pix = [_point_pixel(inv, p.x, p.y) for p in points if p.geom_type == "Point"]
            rr = np.concatenate([p[0] for p in pix]) if pix else np.zeros(0, int)
            cc = np.concatenate([p[1] for p in pix]) if pix else np.zeros(0, int)
        ok = (rr >= 0) & (rr < g.height) & (cc >= 0) & (cc < g.width)
        if not ok.any():
            outside += 1
        rows.append(rr[ok])
        cols.append(cc[ok])
        feats.append(np.full(int(ok.sum()), i))
    report = {"geometries": int(len(gdf)), "outside_raster": outside}
    return (np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64),
            np.concatenate(feats).astype(np.int64), report)


def _point_pixel(inv, x, y):
    c, r = inv @ (x, y)
    return np.array([int(np.floor(r))]), np.array([int(np.floor(c))])


def _read_pixels(mosaic, window, index, picks):
    rr, cc = picks[index]
    data, valid = mosaic.read(*window)
    r, c = rr - window[0], cc - window[1]
    return data[:, r, c].T.astype(np.float64), valid[r, c]


def pixel_values(source: BlockSource, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values ``(n, bands)`` and validity of the given pixels, read per window in Ray tasks."""
    mosaic = source.mosaic
    keys = (rows // WINDOW) * (-(-mosaic.grid.width // WINDOW)) + cols // WINDOW
    order = np.argsort(keys, kind="stable")
    unique, starts = np.unique(keys[order], return_index=True)
    groups = np.split(order, starts[1:]) if len(order) else []
    windows, picks = [], []
    nx = -(-mosaic.grid.width // WINDOW)
    for key, idx in zip(unique, groups):
        r0, c0 = int(key // nx) * WINDOW, int(key % nx) * WINDOW
        windows.append((r0, c0, min(WINDOW, mosaic.grid.height - r0), min(WINDOW, mosaic.grid.width - c0)))
        picks.append((rows[idx], cols[idx]))
    values = np.zeros((len(rows), mosaic.count))
    valid = np.zeros(len(rows), dtype=bool)
    for idx, (v, ok) in zip(groups, source.map(_read_pixels, windows, picks)):
        values[idx], valid[idx] = v, ok
    return values, valid


def samples_from(path: str, source: BlockSource, vector_crs: str | None = None, polygons: str = "all",
                 samples: int = 1000, seed: int = 0):
    """Read ``path`` and return ``(gdf, Samples)`` of its valid pixels inside the raster."""
    gdf = read_vectors(path, source.grid.crs, vector_crs).reset_index(drop=True)
    rows, cols, feats, report = select_pixels(gdf, source.mosaic, polygons, samples, seed)
    values, valid = pixel_values(source, rows, cols)
    report["pixels_on_nodata"] = int((~valid).sum())
    report["pixels_used"] = int(valid.sum())
    if not valid.any():
        raise InputError(f"vector file {path!r}: none of its {len(gdf)} geometries selects a valid pixel "
                         f"of the raster ({report['outside_raster']} lie outside it, "
                         f"{report['pixels_on_nodata']} pixels are nodata); check that they overlap.")
    return gdf, Samples(rows[valid], cols[valid], feats[valid], values[valid], report)


def samples_frame(grid, bands: Sequence[int], s: Samples, columns: dict[str, np.ndarray]):
    """The pixels used, as points at pixel centres with ``columns`` and their band values
    (``samples.gpkg``)."""
    import geopandas as gpd
    import pandas as pd

    x, y = grid.affine @ (s.cols + 0.5, s.rows + 0.5)
    frame = pd.DataFrame({"feature": s.feature, "row": s.rows, "col": s.cols, **columns})
    values = pd.DataFrame(s.values, columns=[f"b{b}" for b in bands])
    return gpd.GeoDataFrame(pd.concat([frame, values], axis=1), geometry=gpd.points_from_xy(x, y), crs=grid.crs)
