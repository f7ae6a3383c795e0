"""GeoParquet 1.1 tables of raster cells: footprint polygons, bbox covering, metadata.

A table is a directory of part files (one per Ray task) and a ``_<name>.json`` sidecar
written last. Readers that take a directory (pyarrow, geopandas, DuckDB's
``read_parquet('dir/*.parquet')``) skip names that start with ``_`` or ``.``, so the sidecar
and unfinished parts (``.parts/``) are never read as data.

Every part carries the same file-level metadata: ``geo`` (GeoParquet 1.1.0: WKB polygons,
PROJJSON CRS, the part's bbox, and the ``bbox`` struct column as its covering), plus any
other keys given (rayvit writes ``emb``, the STAC embeddings extension's fields, and
``rayvit``, the source's provenance).
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from . import storage

GEOPARQUET_VERSION = "1.1.0"
PARTS = ".parts"     # unfinished part files (hidden from readers), moved into place at commit


def cell_bounds(affine, rows: np.ndarray, cols: np.ndarray, heights, widths) -> tuple[np.ndarray, ...]:
    """``(xmin, ymin, xmax, ymax)`` of the pixel rectangles starting at ``rows, cols`` of a
    north-up grid, ``heights x widths`` pixels each."""
    x0 = affine.c + cols * affine.a
    x1 = affine.c + (cols + widths) * affine.a
    y0 = affine.f + rows * affine.e
    y1 = affine.f + (rows + heights) * affine.e
    return np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)


def geo_metadata(crs_wkt: str, bbox, geometry_types=("Polygon",)) -> dict:
    """The ``geo`` file metadata of GeoParquet 1.1 with a bbox covering column."""
    from pyproj import CRS

    return {"version": GEOPARQUET_VERSION, "primary_column": "geometry",
            "columns": {"geometry": {
                "encoding": "WKB", "geometry_types": list(geometry_types),
                "crs": CRS.from_user_input(crs_wkt).to_json_dict(),
                "bbox": [float(v) for v in bbox],
                "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}}}}


def polygons_table(bounds: tuple[np.ndarray, ...], columns: dict, crs_wkt: str, metadata: dict,
                   embedding: np.ndarray | None = None):
    """A pyarrow table: the given columns, ``embedding`` (n, D) as a fixed-size list (when
    given), ``bbox`` and WKB ``geometry`` of each rectangle, with file metadata."""
    import pyarrow as pa
    import shapely

    xmin, ymin, xmax, ymax = (np.asarray(b, np.float64) for b in bounds)
    arrays = {name: pa.array(np.asarray(values)) for name, values in columns.items()}
    if embedding is not None:
        flat = pa.array(np.ascontiguousarray(embedding).reshape(-1))
        arrays["embedding"] = pa.FixedSizeListArray.from_arrays(flat, embedding.shape[1])
    arrays["bbox"] = pa.StructArray.from_arrays([pa.array(v) for v in (xmin, ymin, xmax, ymax)],
                                                names=["xmin", "ymin", "xmax", "ymax"])
    arrays["geometry"] = pa.array(shapely.to_wkb(shapely.box(xmin, ymin, xmax, ymax)), pa.binary())
    extent = (xmin.min(), ymin.min(), xmax.max(), ymax.max()) if len(xmin) else (0, 0, 0, 0)
    meta = {"geo": geo_metadata(crs_wkt, extent), **metadata}
    return pa.table(arrays).replace_schema_metadata({k: json.dumps(v) for k, v in meta.items()})


def write_part(table, outdir: str, name: str, options: dict | None = None) -> str:
    """Write one part file into ``outdir/.parts/`` atomically (a temporary file, then a rename
    or one upload); returns its URL."""
    import pyarrow.parquet as pq

    dest = storage.join(outdir, PARTS, name)
    if storage.is_local(outdir):
        return storage.atomic_write(dest, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    fd, tmp = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        storage.filesystem(outdir, options).put_file(tmp, dest)
    finally:
        os.remove(tmp)
    return dest


def start(outdir: str, sidecar: str, overwrite: bool, options: dict | None = None) -> None:
    """Prepare an output table directory: refuse one that holds a table unless ``overwrite``
    (then remove its parts and sidecar), and clear what an earlier run left unfinished: its
    parts, moved in or not, without the sidecar that commits them."""
    from ..errors import OutputError

    fs = storage.filesystem(outdir, options)
    root = storage.local_path(outdir) if storage.is_local(outdir) else outdir
    names = {p: p.rsplit("/", 1)[-1] for p in (fs.ls(root, detail=False) if fs.exists(root) else [])}
    existing = [p for p, n in names.items() if n.endswith(".parquet") or n == sidecar]
    unfinished = sidecar not in names.values() and all(names[p].startswith("part-") for p in existing)
    if existing and not overwrite and not unfinished:
        raise OutputError(f"output {outdir!r} already holds a table ({len(existing)} files); use "
                          "--overwrite to replace it, or choose another -o.")
    for path in existing:
        fs.rm(path)
    parts = storage.join(outdir, PARTS)
    if fs.exists(parts):
        fs.rm(parts, recursive=True)
    if storage.is_local(outdir):
        os.makedirs(storage.join(outdir, PARTS), exist_ok=True)


def commit(outdir: str, parts: list[str], sidecar: str, record: dict, options: dict | None = None) -> None:
    """Move the finished parts into the table directory, then write the sidecar (last)."""
    fs = storage.filesystem(outdir, options)
    for part in parts:
        final = storage.join(outdir, part.rsplit("/", 1)[-1])
        if storage.is_local(outdir):
            os.replace(part, final)
        else:
            fs.mv(part, final)
    path = storage.join(outdir, sidecar)
    text = json.dumps(record, indent=1, default=str)
    if storage.is_local(outdir):
        os.rmdir(storage.join(outdir, PARTS))
        storage.atomic_write(path, text)
    else:
        with fs.open(path, "w") as fh:
            fh.write(text)
