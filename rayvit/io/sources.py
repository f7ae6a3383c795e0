"""The sources index: every input file's header, read once, kept for the next run.

A mosaic's plan needs each file's header (CRS, transform, size, bands, dtype, nodata,
scales/offsets, band names). Opening a GeoTIFF costs ~1.3 ms of mostly Python-held work in
rasterio, so 4,096 files took 5-9 s of planning, on every run. :func:`describe_all` keeps the
headers in a sources index, one row per file, and a later run over the same files (checked
by size and modification time, or an object's size and ETag from its folder's listing) reads
it instead of opening them; files that changed are described again. Many headers to read
are shared among processes.

The index is a GeoPackage layer in GDAL's GTI conventions (a ``location`` column, each file's
footprint in the first file's CRS, rows in input order), so GDAL, rasterio and QGIS open the
input mosaic through it too (``rasterio.open("....gti.gpkg")``), and it is accepted as an
input itself (``rayvit encode sources.gti.gpkg -o out``). GeoPackage, not FlatGeobuf: the
GDAL inside rasterio's wheel (3.10) has no FlatGeobuf driver, and FlatGeobuf's spatial index
reorders the rows (the input order decides which file wins where files overlap). It lives
in ``$RAYVIT_CACHE`` (default ``~/.cache/rayvit``), under ``sources/``, named by the list of
files (the :data:`KEEP` most recent are kept); lists of :data:`INDEX_FILES` files or more
are indexed. GDAL opens the index of local files; one of objects names them by their URLs
(``s3://``), which only rayvit reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import multiprocessing
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Sequence

from . import storage

if TYPE_CHECKING:
    from .mosaic import Grid

INDEX_FILES = 64         # lists of fewer files are described every run (an index would cost more than it saves)
KEEP = 100               # indexes kept in the cache, the most recently written
THREADS = 16             # remote headers read at once per process (they wait on I/O; local ones are read one by one)
PROCESS_FROM = 256       # headers to read from which processes share them (starting one costs ~0.5 s)
PROCESSES = 16           # at most this many
SUFFIX = ".gti.gpkg"     # GDAL opens *.gti.gpkg through its GTI driver without a prefix
# Source fields kept per row (besides its URL, the GTI ``location``); tuples are stored as JSON
FIELDS = ("crs", "transform", "width", "height", "count", "dtype", "nodata", "names", "scales", "offsets", "plain")
TUPLES = ("transform", "names", "scales", "offsets")
COLUMNS = ("location", *FIELDS, "size", "version")
SHARED = "RAYVIT_SHARED"  # layer metadata: the fields every row shares, as JSON (stored once)
LAYER = "sources"


def cache_dir() -> str:
    return os.path.join(storage.cache_root(), "sources")


def index_path(urls: Sequence[str]) -> str:
    """Where the index of exactly these files (in this order) is kept."""
    key = hashlib.sha256("\n".join(map(absolute, urls)).encode()).hexdigest()[:24]
    return os.path.join(cache_dir(), key + SUFFIX)


def existing_index(urls: Sequence[str]) -> str | None:
    """The path of these files' sources index, if a run has written one."""
    path = index_path(urls) if len(urls) >= INDEX_FILES else None
    return path if path and os.path.exists(path) else None


def is_index(url: str) -> bool:
    """Whether ``url`` names an index given as an input: a sources index, or a block
    product's (``features.gti.gpkg``), local or in an object store."""
    return str(url).endswith(SUFFIX)


def absolute(url: str) -> str:
    """A local file as an absolute path (an index is read from anywhere), a URL as it is."""
    return os.path.abspath(storage.local_path(url)) if storage.is_local(url) else url


def stamp(url: str) -> tuple[int, int]:
    """A file's (size, version): what tells a later run it is unchanged. The version is the
    modification time in ns (an object's is a digest of its ETag: :func:`.storage.object_version`)."""
    st = os.stat(storage.local_path(url))
    return st.st_size, st.st_mtime_ns


def read_index(path: str, options: dict | None = None) -> tuple[dict, Grid | None]:
    """``({url: (Source, (size, version))}, grid)`` from an index file (local or in an
    object store); ``grid`` is the raster the index declares (a block product's), else None.
    Relative locations (a block product names its blocks relative to its index, as GDAL
    reads them) are resolved against the index's folder."""
    if storage.is_local(path):
        local = storage.local_path(path)
        return _read(local, os.path.dirname(os.path.abspath(local)))
    with tempfile.TemporaryDirectory() as tmp:      # a local copy: GDAL reads a .gpkg by name
        local = os.path.join(tmp, "index" + SUFFIX)
        storage.filesystem(path, options).get_file(path, local)
        return _read(local, path.rsplit("/", 1)[0])


def _read(path: str, base: str) -> tuple[dict, Grid | None]:
    import pyogrio

    from ..errors import InputError
    from .mosaic import Grid, Source  # noqa: F811 (imported for type checking above)

    meta = pyogrio.read_info(path)["layer_metadata"] or {}
    shared = json.loads(meta.get(SHARED, "{}"))
    table = pyogrio.read_dataframe(path, read_geometry=False)
    missing = [c for c in COLUMNS if c not in table.columns and c not in shared]
    if missing:
        raise InputError(f"{path!r} is not a rayvit sources index (no {', '.join(missing)} column); give the "
                         "raster files themselves, or an index that rayvit wrote.")
    columns = [c for c in FIELDS if c not in shared]
    # shared fields converted once: every row's Source holds the same tuples (768 band names)
    common = {f: tuple(v) if f in TUPLES else v for f, v in shared.items()}
    if "plain" in common:
        common["plain"] = bool(common["plain"])
    values = {c: table[c].tolist() for c in ["location", *columns, "size", "version"]}
    out = {}
    for i, location in enumerate(values["location"]):
        fields = dict(common)
        for c in columns:
            v = values[c][i]
            if c in TUPLES:
                v = tuple(json.loads(v))
            elif c in ("width", "height", "count"):
                v = int(v)
            elif c == "plain":
                v = bool(v)
            elif c == "nodata":
                v = None if v != v else float(v)   # a column holds no None: NaN there is none
            fields[c] = v
        url = storage.join(base, location) if storage.is_local(location) and not os.path.isabs(location) else location
        out[url] = Source(url, **fields), (int(values["size"][i]), int(values["version"][i]))
    grid = None
    if "XSIZE" in meta and out:
        c, a, b, f, d, e = (float(v) for v in meta["GEOTRANSFORM"].split(","))   # GDAL's order
        grid = Grid(next(iter(out.values()))[0].crs, (a, b, c, d, e, f), int(meta["XSIZE"]), int(meta["YSIZE"]))
    return out, grid


def write_index(path: str, rows: Sequence[tuple], grid: Grid | None = None, bands_xml: str = "") -> None:
    """Write ``(Source, (size, version))`` rows as a GTI-style GeoPackage, atomically.

    A field that every row shares (the CRS, band names: 768 of them in a feature product) is
    stored once, in the layer's metadata. With ``grid`` the index declares its raster (a block
    product: size and geotransform, as GDAL's GTI driver reads them), and ``bands_xml``
    (``<Band>`` elements: type, nodata, description, scale/offset) goes in its ``xml:GTI``
    metadata, so GDAL shows the product's bands as rayvit wrote them.
    """
    import geopandas as gpd
    from shapely import box

    from .mosaic import _bounds_in

    def value(source, f):
        v = getattr(source, f)
        if f == "nodata":
            return float("nan") if v is None else v
        return json.dumps(list(v)) if f in TUPLES else v

    values = {f: [value(s, f) for s, _ in rows] for f in FIELDS}
    shared = {f: getattr(rows[0][0], f) for f, vs in values.items()
              if all(v == vs[0] or (v != v and vs[0] != vs[0]) for v in vs)}
    table = {"location": [s.url for s, _ in rows], **{f: vs for f, vs in values.items() if f not in shared},
             "size": [stamp[0] for _, stamp in rows], "version": [stamp[1] for _, stamp in rows],
             "rank": list(range(len(rows)))}
    crs = rows[0][0].crs
    frame = gpd.GeoDataFrame(table, geometry=[box(*_bounds_in(s, crs)) for s, _ in rows], crs=crs)
    if grid is not None:
        a = grid.affine
        meta = {"XSIZE": str(grid.width), "YSIZE": str(grid.height),
                "GEOTRANSFORM": ",".join(repr(v) for v in (a.c, a.a, a.b, a.f, a.d, a.e))}
    else:
        # GTI paints tiles in SORT_FIELD order, the last on top: descending rank puts the first file
        # on top, so GDAL's mosaic is rayvit's (the first file listed wins where files overlap)
        meta = {"SORT_FIELD": "rank", "SORT_FIELD_ASC": "NO", "MASK_BAND": "YES"}
    meta[SHARED] = json.dumps({f: list(v) if f in TUPLES else v for f, v in shared.items()})
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def write(tmp: str) -> None:
        frame.to_file(tmp, driver="GPKG", engine="pyogrio", layer=LAYER, layer_metadata=meta)
        if bands_xml:
            _add_gti_xml(tmp, f"<GDALTileIndexDataset>{bands_xml}</GDALTileIndexDataset>")

    storage.atomic_write(path, write)


def _add_gti_xml(path: str, xml: str) -> None:
    """Add ``xml`` to the layer's ``xml:GTI`` metadata domain (which GDAL's GTI driver reads
    for what layer metadata items cannot say: per-band descriptions, scales, offsets). GDAL
    keeps a GeoPackage layer's metadata domains as one XML document in ``gpkg_metadata``."""
    import sqlite3

    with sqlite3.connect(path) as db:
        (ident, doc), = db.execute(
            "SELECT m.id, m.metadata FROM gpkg_metadata m JOIN gpkg_metadata_reference r "
            "ON r.md_file_id = m.id WHERE r.table_name = ?", (LAYER,)).fetchall()
        domain = f'<Metadata domain="xml:GTI" format="xml">{xml}</Metadata>'
        db.execute("UPDATE gpkg_metadata SET metadata = ? WHERE id = ?",
                   (doc.replace("</GDALMultiDomainMetadata>", domain + "</GDALMultiDomainMetadata>"), ident))


def describe_all(urls: Sequence[str], describe: Callable, threads: int = THREADS,
                 versions: dict | None = None) -> list:
    """Each URL's :class:`Source`, or the exception describing it raised, in order.

    Lists of :data:`INDEX_FILES` or more come from their sources index where each file's
    size and version still match (a local file's are read here, an object's are given in
    ``versions``, from a listing: :func:`.mosaic.survey_folders`; an object without one is
    described every run); the others are described and the index is rewritten.

    :data:`PROCESS_FROM` files or more to describe are shared among processes (opening a
    header is GIL-held Python and PROJ work: threads gain nothing on local files), when
    ``describe`` can be sent to them; each process (or this one, for fewer) reads ``threads``
    remote headers at once.
    """
    path = index_path(urls) if len(urls) >= INDEX_FILES else None
    versions = versions or {}
    known = {}
    if path and os.path.exists(path):
        try:
            known = read_index(path)[0]
        except Exception:       # an unreadable cache is rebuilt, never trusted
            known = {}
    marks, results = [], []
    for u in urls:
        try:
            mark = (stamp(u) if storage.is_local(u) else versions.get(u)) if path else None
        except OSError:         # describe() says what is wrong with it
            mark = None
        hit = known.get(absolute(u))
        marks.append(mark)
        results.append((hit[0] if hit[0].url == u else replace(hit[0], url=u))
                       if mark is not None and hit and hit[1] == mark else None)
    todo = [u for u, r in zip(urls, results) if r is None]
    described = iter(_describe_many(describe, todo, threads))
    results = [next(described) if r is None else r for r in results]
    good = [(r, mark) for r, mark in zip(results, marks) if not isinstance(r, Exception) and mark is not None]
    if path and good and (todo or len(good) != len(known)):
        try:
            write_index(path, [(replace(r, url=absolute(r.url)), mark) for r, mark in good])
            prune(os.path.dirname(path))
        except OSError:             # a read-only cache: the run goes on without one
            pass
    return results


def _describe_many(describe: Callable, urls: Sequence[str], threads: int) -> list:
    """``describe`` of each URL, or its exception, in order; in :func:`processes` where there are many."""
    workers, context = processes(len(urls)), _forking()
    if workers > 1 and context:
        try:
            pickle.dumps(describe)
        except Exception:           # a closure (tests count calls with one): described here
            context = None
    if workers <= 1 or not context:
        return _describe_each(describe, urls, threads)
    step = max(16, -(-len(urls) // (workers * 8)))      # chunks small enough to share the work evenly
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        parts = pool.map(_describe_each, *zip(*[(describe, urls[i:i + step], threads)
                                                for i in range(0, len(urls), step)]))
        return [r for part in parts for r in part]


def processes(files: int) -> int:
    """How many processes describe ``files`` headers: one below :data:`PROCESS_FROM`, else one
    per CPU this process may use, at most :data:`PROCESSES`."""
    if files < PROCESS_FROM:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, PROCESSES))


def _forking():
    """The "fork" start method where it is safe, else None (headers are then read here).

    Not "spawn": it runs the caller's ``__main__`` again in each process, which a script
    calling ``rayvit.encode`` without an ``if __name__ == "__main__":`` guard does not survive.
    Not once Ray runs in this process (a forked copy of its threads hangs): planning comes
    before Ray starts, except for a caller who started it."""
    ray = sys.modules.get("ray")
    if "fork" not in multiprocessing.get_all_start_methods() or (ray and ray.is_initialized()):
        return None
    return multiprocessing.get_context("fork")


def _describe_each(describe: Callable, urls: Sequence[str], threads: int) -> list:
    def one(u: str):
        try:
            return describe(u)
        except Exception as exc:    # raised by the caller, in input order
            try:
                pickle.dumps(exc)
                return exc
            except Exception:       # sent back from a process: said in words
                return RuntimeError(f"{type(exc).__name__}: {exc}")

    if threads <= 1 or len(urls) <= 1 or all(storage.is_local(u) for u in urls):
        return [one(u) for u in urls]
    with ThreadPoolExecutor(max_workers=min(threads, len(urls))) as pool:
        return list(pool.map(one, urls))


def prune(directory: str, keep: int = KEEP) -> None:
    """Remove all but the ``keep`` most recently written indexes from ``directory``."""
    found = [os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(SUFFIX)]
    for path in sorted(found, key=os.path.getmtime, reverse=True)[keep:]:
        os.remove(path)
