"""The sources index: every input file's header, read once, kept for the next run.

A mosaic's plan needs each file's header (CRS, transform, size, bands, dtype, nodata,
scales/offsets, band names). Opening a GeoTIFF costs ~1.3 ms of mostly Python-held work in
rasterio, so 4,096 files took 5-9 s of planning, on every run. :func:`describe_all` keeps the
headers in a sources index, one row per file, and a later run over the same files (checked
by size and modification time) reads it instead of opening them; files that changed are
described again.

The index is a GeoPackage layer in GDAL's GTI conventions (a ``location`` column, each file's
footprint in the first file's CRS, rows in input order), so GDAL, rasterio and QGIS open the
input mosaic through it too (``rasterio.open("....gti.gpkg")``), and it is accepted as an
input itself (``rayvit encode sources.gti.gpkg -o out``). GeoPackage, not FlatGeobuf: the
GDAL inside rasterio's wheel (3.10) has no FlatGeobuf driver, and FlatGeobuf's spatial index
reorders the rows (the input order decides which file wins where files overlap). It lives
in ``$RAYVIT_CACHE`` (default ``~/.cache/rayvit``), under ``sources/``, named by the list of
files (the :data:`KEEP` most recent are kept); only lists of :data:`INDEX_FILES` local files
or more are indexed, for now.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from . import storage

INDEX_FILES = 64         # lists of fewer files are described every run (an index would cost more than it saves)
KEEP = 100               # indexes kept in the cache, the most recently written
THREADS = 16             # headers read at once (remote reads wait on I/O; local opens gain little)
SUFFIX = ".gti.gpkg"     # GDAL opens *.gti.gpkg through its GTI driver without a prefix
# Source fields kept per row (besides its URL, the GTI ``location``); tuples are stored as JSON
FIELDS = ("crs", "transform", "width", "height", "count", "dtype", "nodata", "names", "scales", "offsets")
TUPLES = ("transform", "names", "scales", "offsets")
COLUMNS = ("location", *FIELDS, "size", "mtime_ns")


def cache_dir() -> str:
    return os.path.join(os.environ.get("RAYVIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rayvit"),
                        "sources")


def index_path(urls: Sequence[str]) -> str:
    """Where the index of exactly these files (in this order) is kept."""
    key = hashlib.sha256("\n".join(urls).encode()).hexdigest()[:24]
    return os.path.join(cache_dir(), key + SUFFIX)


def indexable(urls: Sequence[str]) -> bool:
    """Whether these files get a sources index (enough of them, all local)."""
    return len(urls) >= INDEX_FILES and all(storage.is_local(u) for u in urls)


def existing_index(urls: Sequence[str]) -> str | None:
    """The path of these files' sources index, if a run has written one."""
    path = index_path(urls) if indexable(urls) else None
    return path if path and os.path.exists(path) else None


def is_index(url: str) -> bool:
    """Whether ``url`` names a sources index given as an input."""
    return str(url).endswith(SUFFIX) and storage.is_local(str(url))


def _stamp(url: str) -> tuple[int, int]:
    st = os.stat(storage.local_path(url))
    return st.st_size, st.st_mtime_ns


def read_index(path: str) -> dict:
    """``{url: (Source, (size, mtime_ns))}`` from an index file."""
    import pyogrio

    from .mosaic import Source

    table = pyogrio.read_dataframe(path, read_geometry=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        from ..errors import InputError
        raise InputError(f"{path!r} is not a rayvit sources index (no {', '.join(missing)} column); give the "
                         "raster files themselves, or an index that rayvit wrote.")
    out = {}
    for row in table.to_dict("records"):
        fields = {f: tuple(json.loads(row[f])) if f in TUPLES else row[f] for f in FIELDS}
        fields.update(width=int(row["width"]), height=int(row["height"]), count=int(row["count"]),
                      nodata=None if row["nodata"] != row["nodata"] else float(row["nodata"]))   # NaN: none
        out[row["location"]] = Source(row["location"], **fields), (int(row["size"]), int(row["mtime_ns"]))
    return out


def write_index(path: str, rows: Sequence[tuple]) -> None:
    """Write ``(Source, (size, mtime_ns))`` rows as a GTI-style GeoPackage, atomically."""
    import geopandas as gpd
    from shapely import box

    from .mosaic import _bounds_in

    def row(rank: int, source, stamp: tuple[int, int]) -> dict:
        fields = {f: json.dumps(list(getattr(source, f))) if f in TUPLES else getattr(source, f) for f in FIELDS}
        fields["nodata"] = float("nan") if source.nodata is None else source.nodata
        return {"location": source.url, **fields, "size": stamp[0], "mtime_ns": stamp[1], "rank": rank}

    crs = rows[0][0].crs
    table = gpd.GeoDataFrame([row(k, s, stamp) for k, (s, stamp) in enumerate(rows)],
                             geometry=[box(*_bounds_in(s, crs)) for s, _ in rows], crs=crs)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp{SUFFIX}"
    # GTI paints tiles in SORT_FIELD order, the last on top: descending rank puts the first file
    # on top, so GDAL's mosaic is rayvit's (the first file listed wins where files overlap)
    table.to_file(tmp, driver="GPKG", engine="pyogrio", layer="sources",
                  layer_metadata={"SORT_FIELD": "rank", "SORT_FIELD_ASC": "NO", "MASK_BAND": "YES"})
    os.replace(tmp, path)


def describe_all(urls: Sequence[str], describe: Callable, threads: int = THREADS) -> list:
    """Each URL's :class:`Source`, or the exception describing it raised, in order.

    Local files come from the index of these files where their size and modification time
    still match; the others are described (``threads`` at once) and the index is rewritten.
    """
    local = indexable(urls)
    path = index_path(urls) if local else None
    known = {}
    if path and os.path.exists(path):
        try:
            known = read_index(path)
        except Exception:       # an unreadable cache is rebuilt, never trusted
            known = {}

    def one(u: str):
        try:
            try:
                stamp = _stamp(u) if local else None
            except OSError:         # describe() says what is wrong with it
                stamp = None
            hit = known.get(u)
            if stamp is not None and hit and hit[1] == stamp:
                return hit[0], stamp, False
            return describe(u), stamp, True
        except Exception as exc:    # raised by the caller, in input order
            return exc, None, False

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(urls)))) as pool:
        results = list(pool.map(one, urls))
    good = [(r, stamp) for r, stamp, _ in results if not isinstance(r, Exception) and stamp is not None]
    if path and good and (any(new for *_, new in results) or len(good) != len(known)):
        try:
            write_index(path, good)
            prune(os.path.dirname(path))
        except OSError:             # a read-only cache: the run goes on without one
            pass
    return [r for r, _, _ in results]


def prune(directory: str, keep: int = KEEP) -> None:
    """Remove all but the ``keep`` most recently written indexes from ``directory``."""
    found = [os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(SUFFIX)]
    for path in sorted(found, key=os.path.getmtime, reverse=True)[keep:]:
        os.remove(path)
