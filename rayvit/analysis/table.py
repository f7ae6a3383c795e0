"""``table``: a feature raster -> a GeoParquet embedding table, one row per cell or per pixel.

``pool="tile"``: one row per ``tile x tile`` cell of feature pixels (aligned on the raster's
origin), its embedding the mean over the cell's valid pixels; ``pool="none"``: one row per
valid feature pixel. Each Ray task reads one window and writes one part file; the driver
receives file names and row counts, and writes the ``_table.json`` sidecar last.

Columns: ``row``, ``col`` (the cell's index in the cell grid; the pixel's with ``none``),
``valid_fraction`` (valid pixels / the cell's pixels inside the raster), ``embedding``
(fixed-size list of float32, float16 or int8), ``bbox`` (covering) and ``geometry`` (the
footprint polygon, WKB). File metadata: ``geo`` (GeoParquet 1.1), ``emb`` (the STAC
embeddings extension's fields: ``emb:type``, ``emb:dimensions``, ``data_type``, ``gsd``,
``emb:chip_layout``, ``emb:runtime_parameters``, ``emb:quantization`` for int8) and
``rayvit`` (the source raster's sidecar).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from ..version import __version__
from ..console import progress_enabled
from ..errors import InputError
from ..io import geoparquet, quantize, storage
from ..io.mosaic import Mosaic
from .source import BlockSource

POOLS = ("tile", "none")
TABLE_DTYPES = ("float32", "float16", "int8")
SIDECAR = "_table.json"
READ_BYTES = 256 * 2**20     # float32 pixels a task reads at once (one window)


def window_side(bands: int, tile: int) -> int:
    """Side of the square windows tasks read: at most READ_BYTES of float32 pixels, a
    multiple of ``tile``."""
    side = int(math.sqrt(READ_BYTES / (4 * bands)))
    return max(tile, side // tile * tile)


def pool_cells(data: np.ndarray, valid: np.ndarray, tile: int):
    """Mean of the valid pixels of each ``tile x tile`` cell of a window.

    ``data (D, h, w)``, ``valid (h, w)`` -> ``(cell rows, cell cols, means (n, D) float64,
    valid counts, pixel counts)`` of the cells with at least one valid pixel; cells at the
    window's bottom/right edge may be smaller than ``tile``.
    """
    d, h, w = data.shape
    ny, nx = -(-h // tile), -(-w // tile)
    pad = ((0, 0), (0, ny * tile - h), (0, nx * tile - w))
    weights = np.pad(valid.astype(np.float64), pad[1:])
    values = np.pad(data.astype(np.float64), pad) * weights
    sums = values.reshape(d, ny, tile, nx, tile).sum(axis=(2, 4))
    counts = weights.reshape(ny, tile, nx, tile).sum(axis=(1, 3))
    inside = np.pad(np.ones((h, w)), pad[1:]).reshape(ny, tile, nx, tile).sum(axis=(1, 3))
    rows, cols = np.nonzero(counts)
    means = (sums[:, rows, cols] / counts[rows, cols]).T
    return rows, cols, means, counts[rows, cols], inside[rows, cols]


@dataclass(frozen=True)
class TableSpec:
    """What every table task needs (small: it travels with each task)."""

    outdir: str
    pool: str
    tile: int
    dtype: str
    metadata: tuple            # ((key, json text), ...) file metadata besides ``geo``
    scale: tuple = ()          # int8 codes: per-dimension scale and offset
    offset: tuple = ()
    options: tuple = ()


def _ranges(mosaic: Mosaic, window, index):
    data, valid = mosaic.read(*window)
    return quantize.band_ranges(data, valid)


def _write_part(mosaic: Mosaic, window, index, spec: TableSpec):
    r0, c0, h, w = window
    data, valid = mosaic.read(*window)
    if spec.pool == "none":
        rows, cols = np.nonzero(valid)
        emb = data[:, rows, cols].T.astype(np.float64)
        fraction, size = np.ones(len(rows)), np.ones(len(rows), int)
        rows, cols = rows + r0, cols + c0
        heights = widths = size
    else:
        rows, cols, emb, counts, inside = pool_cells(data, valid, spec.tile)
        fraction = counts / inside
        heights = np.minimum(spec.tile, h - rows * spec.tile)
        widths = np.minimum(spec.tile, w - cols * spec.tile)
        rows, cols = rows + r0 // spec.tile, cols + c0 // spec.tile
    if len(rows) == 0:
        return None, 0
    if spec.dtype == "int8":
        emb = quantize.quantize(emb.T, np.ones(len(emb), bool), np.array(spec.scale), np.array(spec.offset),
                                "int8").T
    else:
        emb = emb.astype(spec.dtype)
    tile = 1 if spec.pool == "none" else spec.tile
    bounds = geoparquet.cell_bounds(mosaic.grid.affine, rows * tile, cols * tile, heights, widths)
    table = geoparquet.polygons_table(
        bounds, {"row": rows.astype(np.int64), "col": cols.astype(np.int64),
                 "valid_fraction": fraction.astype(np.float32)},
        mosaic.grid.crs, {k: json.loads(v) for k, v in spec.metadata}, emb)
    url = geoparquet.write_part(table, spec.outdir, f"part-{index:06d}.parquet",
                                storage.unfreeze(spec.options) or None)
    return url, len(rows)


def stac_fields(sidecar: dict, mosaic: Mosaic, pool: str, tile: int, dtype: str) -> dict:
    """The STAC embeddings extension's fields for this table (``emb`` file metadata)."""
    from rasterio.crs import CRS

    crs = CRS.from_wkt(mosaic.grid.crs)
    out = {"emb:type": "pixel" if pool == "none" else "chip", "emb:dimensions": mosaic.count,
           "data_type": dtype, "processing:datetime": datetime.now(timezone.utc).isoformat()}
    if crs.is_projected:
        out["gsd"] = float(mosaic.grid.res[0]) * (1 if pool == "none" else tile)
    if pool == "tile":
        out["emb:chip_layout"] = {"layout_type": "regular_grid", "chip_size": [tile, tile],
                                  "stride": [tile, tile]}
    runtime = {k: sidecar[k] for k in ("model", "preset", "weights", "weights_sha256", "layer",
                                       "normalization", "size", "stride", "merge", "patch_footprint")
               if k in sidecar}
    if runtime:
        out["emb:runtime_parameters"] = runtime
    if sidecar.get("quantization"):
        out["emb:source_quantization"] = sidecar["quantization"]
    return out


@dataclass
class TableResult:
    output: str
    rows: int
    parts: int
    elapsed_s: float
    sidecar: dict

    def summary(self) -> str:
        return (f"{self.rows} rows in {self.parts} part files in {self.elapsed_s:.1f} s "
                f"({self.rows / max(self.elapsed_s, 1e-9):.0f} rows/s) -> {self.output}")


def table(input: str, output: str, pool: str = "tile", tile: int = 16, dtype: str = "float32",
          bands=None, overwrite: bool = False, address: str | None = None, progress: bool = True,
          dry_run: bool = False) -> TableResult:
    """Write the GeoParquet embedding table of feature raster ``input`` into directory ``output``."""
    t0 = time.monotonic()
    if pool not in POOLS:
        raise InputError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}.")
    if dtype not in TABLE_DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(TABLE_DTYPES)}, got {dtype!r}.")
    if tile < 1:
        raise InputError(f"--tile must be >= 1 feature pixel, got {tile}.")
    tile = 1 if pool == "none" else tile
    source = BlockSource.open(input, bands)
    mosaic, g = source.mosaic, source.grid
    side = window_side(mosaic.count, tile)
    windows = source.windows(side)
    cells = -(-g.height // tile) * -(-g.width // tile)
    if dry_run:
        plan = (f"input:  {input}: {g.width}x{g.height} feature px x {mosaic.count} bands\n"
                f"rows:   up to {cells} ({'one per valid pixel' if pool == 'none' else f'{tile}x{tile}-px cells'}), "
                f"embedding {dtype}[{mosaic.count}]\nwork:   {len(windows)} part files, one per Ray task "
                f"({side}x{side}-px windows)\noutput: {output}/part-*.parquet + {SIDECAR}")
        return TableResult(output, 0, 0, time.monotonic() - t0, {"plan": plan})
    sidecar = source.sidecar
    options = storage.storage_options(output)
    geoparquet.start(output, SIDECAR, overwrite, options or None)
    from ..runtime import init_ray

    with progress_enabled(progress):
        init_ray(address)
        scale = offset = ()
        if dtype == "int8":
            parts = [p for p in source.map(_ranges, windows, label="ranges") if p[0]]
            lo, hi = np.min([p[0] for p in parts], axis=0), np.max([p[1] for p in parts], axis=0)
            scale, offset = (tuple(a.tolist()) for a in quantize.params(lo, hi, "int8"))
        emb = stac_fields(sidecar, mosaic, pool, tile, dtype)
        if scale:
            emb["emb:quantization"] = quantize.stac_object("int8", scale, offset)
        provenance = {"source": input, "rayvit_version": __version__, "pool": pool, "tile": tile,
                      "crs": g.crs, "transform": list(g.transform), "width": g.width, "height": g.height,
                      "bands": list(mosaic.bands), "source_sidecar": sidecar}
        spec = TableSpec(output, pool, tile, dtype,
                         (("emb", json.dumps(emb)), ("rayvit", json.dumps(provenance, default=str))),
                         scale, offset, storage.freeze(options) if options else ())
        written = [p for p in source.map(_write_part, windows, spec, label="table") if p[0]]
    rows = sum(n for _, n in written)
    if rows == 0:
        raise InputError(f"raster {input!r} has no valid pixel: the table would be empty.")
    record = {**provenance, "rows": rows, "parts": len(written), "dtype": dtype, "emb": emb,
              "elapsed_s": time.monotonic() - t0}
    geoparquet.commit(output, [u for u, _ in written], SIDECAR, record, options or None)
    return TableResult(output, rows, len(written), time.monotonic() - t0, record)


def arguments(p) -> None:
    """``rayvit table``'s options (:mod:`rayvit.stages`)."""
    from ..options import add_ray_options, ints

    p.description = ("Write a feature raster as a GeoParquet 1.1 table, one part file per Ray "
                     "task: one row per --tile x --tile cell of feature pixels with the mean "
                     "embedding of its valid pixels (--pool tile), or one row per valid "
                     "feature pixel (--pool none). Columns: row, col, valid_fraction, "
                     "embedding (fixed-size list), bbox (covering) and geometry (footprint). "
                     "File metadata: geo, emb (STAC embeddings extension fields) and rayvit "
                     "(the source's sidecar: model, weights checksum, layer, normalisation, "
                     "grid). Read with geopandas.read_parquet(DIR), pyarrow or DuckDB "
                     "read_parquet('DIR/*.parquet').")
    p.epilog = ("example: rayvit table out/features.gti.gpkg -o emb/ --pool tile --tile 16")
    p.add_argument("input", help="feature raster (features.tif/.gti.gpkg, or any raster; "
                                 "int8 with scales is dequantised)")
    p.add_argument("-o", "--output", required=True, help="output directory (local or s3://...)")
    p.add_argument("--pool", choices=("tile", "none"), default="tile",
                   help="tile: a row per cell, mean over its valid pixels (default); none: a row per pixel")
    p.add_argument("--tile", type=int, default=16, help="with --pool tile: cell side in feature pixels (default 16)")
    p.add_argument("--dtype", choices=("float32", "float16", "int8"), default="float32",
                   help="embedding type (default float32); int8: codes with a scale/offset per dimension "
                        "in the emb:quantization metadata")
    p.add_argument("--bands", type=ints, help="1-based bands to use (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace a table already in the output directory")
    p.add_argument("--dry-run", action="store_true", help="print the rows and part files it would write; writes nothing")
    add_ray_options(p)
