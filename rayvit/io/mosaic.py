"""Open one or many rasters as one mosaic on one target grid, and read windows across files.

The driver only reads metadata (:func:`open_mosaic`); workers read windows
(:meth:`Mosaic.read`). A window that straddles several files reads from each; where files
overlap, the first file listed wins (as ``gdal_merge``). Files already on the target grid
(same CRS and resolution, whole-pixel offset) are read directly; others are warped
(nearest neighbour) onto it through a ``WarpedVRT``.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import warnings
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache, partial
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Interleaving, MaskFlags, Resampling
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from ..console import warn
from ..errors import InputError, RasterOpenError
from . import sources as sources_io
from . import storage

EPS = 1e-6
MAX_OPEN = 64           # open datasets a process keeps (per-process cache, least recently used out)
VRT_FROM = 16           # sources in one window from which they are read as one VRT (Mosaic._read_many)
GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
              "int32": "Int32", "float32": "Float32", "float64": "Float64"}
INDEX_FROM = 8          # sources from which a window's lookup goes through an R-tree
# GDAL's block cache defaults to 5 % of RAM *per process*, and every Ray read and write worker
# is a process: cap it so memory does not grow with the area read (set before GDAL's first
# use). Not below one tile of every band of a feature raster: pixel-interleaved tiles of 384
# bands decode to ~100 MB, and with 64 MB GDAL decoded each tile once per band (a PCA read of
# one 512-px window took 12.7 s instead of ~0.1 s).
os.environ.setdefault("GDAL_CACHEMAX", "256")


def cache_bytes() -> int:
    """GDAL's block cache in bytes (``GDAL_CACHEMAX`` in MB; a percentage counts as 256 MB)."""
    value = os.environ.get("GDAL_CACHEMAX", "256")
    return int(value) * 2**20 if value.isdigit() else 256 * 2**20


def tile_chunks(window: Window, block: tuple[int, int], tile_bytes: int, cache: int) -> list[Window]:
    """``window`` cut along the file's tiles when the tiles it touches would not fit in half of
    GDAL's cache, else ``[window]``. GDAL decodes a pixel-interleaved tile for all bands at
    once and caches each band's part: when a window's tiles do not fit, they are evicted and
    decoded again for every band. Measured on a 384-band float16 raster in 256-px tiles:
    416-px windows read 7,100 px/s, tile-aligned 256-px windows 112,000 px/s."""
    bh, bw = block
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    rows = range(r0 // bh * bh, r1, bh)
    cols = range(c0 // bw * bw, c1, bw)
    if len(rows) * len(cols) <= 1 or len(rows) * len(cols) * tile_bytes <= cache // 2:
        return [window]
    return [Window(max(c, c0), max(r, r0), min(c + bw, c1) - max(c, c0), min(r + bh, r1) - max(r, r0))
            for r in rows for c in cols]


def nodata_valid(data: np.ndarray, nodata: float) -> np.ndarray:
    """``(rows, cols)`` bool: where no band of ``data (bands, rows, cols)`` holds ``nodata``;
    GDAL's nodata mask (the value cast to the band's type, so 2.5 is 2 in uint16; NaN by
    ``isnan``; an integer type never holds a value outside its range), computed once for all
    bands."""
    if data.dtype.kind in "iu" and not np.iinfo(data.dtype).min <= nodata <= np.iinfo(data.dtype).max:
        return np.ones(data.shape[1:], bool)
    value = data.dtype.type(nodata)
    bad, scratch = np.zeros(data.shape[1:], bool), np.empty(data.shape[1:], bool)
    for band in data:
        bad |= np.isnan(band, out=scratch) if np.isnan(value) else np.equal(band, value, out=scratch)
    return ~bad


def masked_valid(arr: np.ma.MaskedArray) -> tuple[np.ndarray, np.ndarray]:
    """``(data, valid)`` of a masked read: valid where no band is masked."""
    return np.ma.getdata(arr), ~np.ma.getmaskarray(arr).any(axis=0)


def read_valid(ds, bands: Sequence[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
    """``(data (bands, rows, cols), valid (rows, cols))`` of a window of an open dataset: valid
    where no selected band is masked. Bands whose only mask is their nodata value (most
    rasters) are read plainly and compared once: GDAL's masked read builds a mask per band
    (measured: 3.3 against 2.5 ms per 224-px tile, 4-band uint16, deflate). Windows whose
    tiles would overflow GDAL's cache are read tile by tile (:func:`tile_chunks`)."""
    all_flags, all_nodata = ds.mask_flag_enums, ds.nodatavals   # each a call per band: once, not per band
    flags = {tuple(all_flags[b - 1]) for b in bands}
    nodata = {repr(all_nodata[b - 1]) for b in bands}
    # one kind of mask and one nodata value for every selected band: else GDAL's per-band masks
    plain = len(flags) == 1 and flags <= {(MaskFlags.all_valid,), (MaskFlags.nodata,)} and len(nodata) == 1
    per_tile = 1 if ds.interleaving == Interleaving.band else ds.count   # bands one tile decodes
    tile_bytes = ds.block_shapes[0][0] * ds.block_shapes[0][1] * per_tile * np.dtype(ds.dtypes[0]).itemsize
    chunks = tile_chunks(window, ds.block_shapes[0], tile_bytes, cache_bytes())
    with warnings.catch_warnings():   # told once, in plain words, by describe()
        warnings.simplefilter("ignore", NodataShadowWarning)
        if len(chunks) == 1:
            arr = ds.read(bands, window=window, masked=not plain)
        else:
            r0, c0 = int(window.row_off), int(window.col_off)
            shape = (len(bands), int(window.height), int(window.width))
            arr = np.empty(shape, ds.dtypes[0])
            if not plain:
                arr = np.ma.masked_array(arr, mask=np.zeros(shape, bool))
            for w in chunks:
                y, x = int(w.row_off) - r0, int(w.col_off) - c0
                arr[:, y:y + int(w.height), x:x + int(w.width)] = ds.read(bands, window=w, masked=not plain)
    if not plain:
        return masked_valid(arr)
    if flags == {(MaskFlags.all_valid,)}:
        return arr, np.ones(arr.shape[1:], bool)
    return arr, nodata_valid(arr, all_nodata[bands[0] - 1])


@dataclass(frozen=True)
class Source:
    """Metadata of one input raster (no open handle: it travels to workers)."""

    url: str
    crs: str
    transform: tuple[float, ...]
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    names: tuple[str | None, ...] = ()   # per band: its description, else red/green/blue colour
    scales: tuple[float, ...] = ()       # per band: GDAL scale and offset (value = stored * s + o)
    offsets: tuple[float, ...] = ()
    # a STAC item (io.stac): band i is band ``part_bands[i]`` of the file ``parts[i]`` (an asset,
    # each on its own grid: 10 m and 20 m bands are warped onto the target grid on read);
    # ``item`` holds its id, collection, datetime and cloud cover as (key, value) pairs
    parts: tuple["Source", ...] = ()
    part_bands: tuple[int, ...] = ()
    item: tuple = ()
    # every band's validity is its nodata value (one for all bands) or nothing: no mask band,
    # no alpha (what lets many files be read as one VRT, :meth:`Mosaic._read_many`)
    plain: bool = False
    # the file's folder may hold sidecar files (.aux.xml, .msk, .ovr...) that GDAL must look
    # for on every open; False where listing it showed none (:func:`survey_folders`)
    sidecars: bool = True

    def scaled(self, bands: Sequence[int]) -> bool:
        """Whether any of ``bands`` (1-based) declares a scale or offset other than 1 and 0."""
        return any(self.scales[b - 1] != 1 or self.offsets[b - 1] != 0 for b in bands
                   if b <= len(self.scales))

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform[:6])

    def band_list(self) -> str:
        """``a.tif: 3 bands (B04, B03, B02)``, for messages."""
        names = ", ".join(n or "unnamed" for n in self.names) if any(self.names) else "unnamed"
        return f"{self.url}: {self.count} band{'s' if self.count != 1 else ''} ({names})"

    def band_index(self, name: str) -> int | None:
        """1-based index of the band called ``name`` (loosely: ``B2`` = ``B02``), or None."""
        key = canonical(name)
        return next((i + 1 for i, n in enumerate(self.names) if n and canonical(n) == key), None)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a, b, c, d, e, f = self.transform          # Affine's arithmetic, without making one (10^5 files)
        x1, y1 = self.width * a + self.height * b + c, self.width * d + self.height * e + f
        return (min(c, x1), min(f, y1), max(c, x1), max(f, y1))


@dataclass(frozen=True)
class Grid:
    """A north-up target grid: CRS, transform and size in pixels."""

    crs: str
    transform: tuple[float, ...]
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform[:6])

    @property
    def res(self) -> tuple[float, float]:
        return (self.affine.a, -self.affine.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a = self.affine
        return (a.c, a.f + a.e * self.height, a.c + a.a * self.width, a.f)

    def window_bounds(self, row: int, col: int, rows: int, cols: int) -> tuple[float, float, float, float]:
        a = self.affine
        return (a.c + col * a.a, a.f + (row + rows) * a.e, a.c + (col + cols) * a.a, a.f + row * a.e)

    def scaled(self, fy: int, fx: int) -> "Grid":
        """The coarser grid whose pixels cover ``fy x fx`` of these, same origin, covering all."""
        a = self.affine
        return Grid(self.crs, tuple(Affine(a.a * fx, 0, a.c, 0, a.e * fy, a.f))[:6],
                    math.ceil(self.width / fx), math.ceil(self.height / fy))

    def area_km2(self) -> float:
        crs = CRS.from_user_input(self.crs)
        x0, y0, x1, y1 = self.bounds
        if crs.is_projected:
            factor = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
            return (x1 - x0) * (y1 - y0) * factor * factor / 1e6
        # geographic: spherical approximation
        r = 6371.0088
        return (math.radians(x1 - x0) * r * r
                * abs(math.sin(math.radians(y1)) - math.sin(math.radians(y0))))


# --------------------------------------------------------------------------- opening

_OPEN: dict[str, rasterio.DatasetReader] = {}
_WARPED: dict[tuple, WarpedVRT] = {}


def close_cached(url: str | None = None) -> None:
    """Close this process's cached handles (those of ``url``, or all).

    rasterio allows one fsspec opener per URL at a time: opening a remote URL again while a
    cached handle holds it breaks that handle's close. Left to interpreter shutdown, GDAL
    closes a remote dataset after its Python file object is gone, prints an I/O error and can
    crash the process.
    """
    for key in [k for k in _WARPED if url is None or k[0] == url]:
        _WARPED.pop(key).close()
    for key in [k for k in _OPEN if url is None or k == url]:
        _OPEN.pop(key).close()


atexit.register(close_cached)


def open_raster(url: str, options: dict | None = None, refresh: bool = True, sidecars: bool = True):
    """Open ``url`` with rasterio (fsspec opener for remote URLs). Errors name the file.

    Remote files: ``refresh`` forgets the filesystem's cached listings first; ``sidecars=False``
    (its folder is known to hold no .aux.xml, .msk or .ovr file) spares GDAL's probes for
    them. Describing 10^4 objects of one prefix listed it on every open before: O(n^2)."""
    storage.backend(url)      # an unknown scheme or a missing package: said as such
    if not storage.is_local(url) and str(url).endswith(sources_io.SUFFIX):
        # GDAL reading a GeoPackage through rasterio's Python file opener crashes the process
        raise RasterOpenError(f"{url!r} is a tile index in an object store, which rayvit cannot open as "
                              "one raster here; give it to rayvit's analysis stages (they read its blocks), or "
                              "open it with GDAL's own /vsis3/, /vsigs/ or /vsiaz/ paths.")
    try:
        if storage.is_local(url):
            path = storage.local_path(url)
            if not os.path.exists(path):
                raise RasterOpenError(f"input raster {url!r} does not exist; check the path.")
            with rasterio.Env(**no_probes(sidecars)):
                return rasterio.open(path)
        close_cached(url)
        fs = storage.filesystem(url, options)
        if refresh:
            # A worker process outlives a command (Ray reuses it for the next job, or the next
            # command run in the same process): a listing it cached earlier may predate this
            # object, and would hide it.
            fs.invalidate_cache()
        # GDAL probes for sidecar files (.aux.xml, .msk, .ovr) one by one, or not at all in a
        # folder known to hold none, rather than by listing the folder on every open
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="YES" if sidecars else "EMPTY_DIR"):
            return rasterio.open(url, opener=storage.RasterOpener(fs))
    except RasterOpenError:
        raise
    except (RasterioError, OSError, ValueError) as exc:
        if not storage.is_local(url):
            denied, found = isinstance(exc, PermissionError), True
            if not denied:
                try:
                    found = storage.exists(url, options)
                except PermissionError:
                    denied = True
                except Exception:  # unreachable host, bad endpoint: reported below
                    found = False
            if denied:
                raise RasterOpenError(
                    f"access to input raster {url!r} was denied; check the credentials "
                    f"({storage.credentials_hint(url)}) and that they may read this object.") from None
            if not found:
                raise RasterOpenError(f"input raster {url!r} does not exist or cannot be reached "
                                      f"({type(exc).__name__}); check the URL and the credentials "
                                      f"({storage.credentials_hint(url)}).") from exc
        raise RasterOpenError(f"input raster {url!r} is not a readable raster "
                              f"(GDAL says: {str(exc).splitlines()[0]}); check the file is a complete "
                              "GeoTIFF/COG or another GDAL format.") from exc


def no_probes(sidecars: bool) -> dict:
    """GDAL options that spare it looking for sidecar files where there are none: no folder
    listing, and no .aux.xml read (PAM; 0.75 -> 0.57 ms per local GeoTIFF open). What GDAL
    keeps in the file itself (scales, offsets, band names in its GDAL_METADATA tag) is read."""
    return {} if sidecars else {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_PAM_ENABLED": "NO"}


def _cached(url: str, options: dict | None, sidecars: bool = True):
    """Per-process open handles: a worker reads many windows of the same few files. At most
    :data:`MAX_OPEN` are kept, the least recently used closed first (a block product has one
    file per block, 10^4 of them at continental scale)."""
    ds = _OPEN.pop(url, None)
    if ds is None or ds.closed:
        ds = open_raster(url, options, sidecars=sidecars)
    _OPEN[url] = ds
    while len(_OPEN) > MAX_OPEN:
        close_cached(next(iter(_OPEN)))
    return ds


def describe(url: str, options: dict | None = None, refresh: bool = True, sidecars: bool = True) -> Source:
    with open_raster(url, options, refresh, sidecars) as ds:
        if ds.crs is None:
            raise InputError(
                f"input raster {url!r} has no CRS, so it cannot be placed on a map; assign one "
                f"first, e.g. `gdal_edit.py -a_srs EPSG:32633 {url}`.")
        if ds.transform.b or ds.transform.d:
            raise InputError(f"input raster {url!r} is rotated; warp it north-up first "
                             "(gdalwarp) before encoding.")
        if ds.nodata is not None and ColorInterp.alpha in ds.colorinterp:
            warn(f"input raster {url!r} has both a nodata value ({ds.nodata:g}) and an alpha band; "
                 "rayvit takes validity from the nodata value and reads the alpha band as data. "
                 "Unset one of them (e.g. `gdal_edit.py -unsetnodata`), or leave the alpha band "
                 "out with --bands.")
        colours = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}
        names = tuple(d or colours.get(c) for d, c in zip(ds.descriptions, ds.colorinterp))
        flags = {tuple(f) for f in ds.mask_flag_enums}
        plain = (flags <= {(MaskFlags.all_valid,), (MaskFlags.nodata,)} and len(flags) == 1
                 and len({repr(v) for v in ds.nodatavals}) == 1)
        return Source(url, ds.crs.to_wkt(), tuple(ds.transform)[:6], ds.width, ds.height,
                      ds.count, ds.dtypes[0], ds.nodata, names,
                      tuple(float(s) for s in ds.scales), tuple(float(o) for o in ds.offsets), plain=plain,
                      sidecars=sidecars)


def describe_in(bare: frozenset, options: dict | None, url: str) -> Source:
    """:func:`describe` of a file of a mosaic whose folders ``bare`` hold no sidecar (what
    :func:`.sources.describe_all` sends to other processes)."""
    return describe(url, options, refresh=False, sidecars=folder_of(url) not in bare)


def canonical(name: str) -> str:
    """A band name compared loosely: case, spaces, ``SR_`` prefixes and leading zeros do not
    matter (``B02`` = ``b2`` = ``SR_B2``; ``B8A`` = ``B08a``)."""
    key = re.sub(r"[\s_-]+", "", str(name).lower())
    key = key[2:] if key.startswith("sr") and key[2:3] == "b" else key
    m = re.fullmatch(r"b0*(\d+)(a?)", key)
    return f"b{m.group(1)}{m.group(2)}" if m else key


def crs_name(crs: str | CRS) -> str:
    """A CRS in a few words, for messages and reports: ``EPSG:32633``, or for a CRS without an
    EPSG code (a WKT-only UTM raster is common) its WKT name and ``(no EPSG code)``."""
    crs = crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
    epsg = crs.to_epsg()
    if epsg:
        return f"EPSG:{epsg}"
    from pyproj import CRS as ProjCRS

    return f"{ProjCRS.from_wkt(crs.to_wkt()).name!r} (no EPSG code)"


@lru_cache(maxsize=64)
def _same_crs(a: str, b: str) -> bool:
    """Whether two WKT strings are one CRS (parsed once per pair: files of a mosaic share one)."""
    return a == b or CRS.from_wkt(a) == CRS.from_wkt(b)


def _bounds_in(src: Source, crs: str) -> tuple[float, float, float, float]:
    """A source's bounds in another CRS (asked for on every window read: nothing here hashes
    the whole Source, whose band names may be 768 strings)."""
    if _same_crs(src.crs, crs):
        return src.bounds
    return _warped_bounds(src.crs, src.bounds, crs)


@lru_cache(maxsize=2**16)
def _warped_bounds(src_crs: str, bounds: tuple, crs: str) -> tuple:
    return transform_bounds(CRS.from_wkt(src_crs), CRS.from_wkt(crs), *bounds, densify_pts=21)


def _aligned(src: Source, grid: Grid) -> bool:
    """Whether a source lies on the grid: same CRS and resolution, a whole-pixel offset."""
    if not _same_crs(src.crs, grid.crs):
        return False
    s, g = src.affine, grid.affine
    if abs(s.a - g.a) > EPS * abs(g.a) or abs(s.e - g.e) > EPS * abs(g.e):
        return False
    cx, cy = (s.c - g.c) / g.a, (s.f - g.f) / g.e
    return abs(cx - round(cx)) < 1e-4 and abs(cy - round(cy)) < 1e-4


def _snap(lo: float, hi: float, anchor: float, res: float) -> tuple[float, int]:
    start = anchor + math.floor((lo - anchor) / res + 1e-9) * res
    n = max(1, math.ceil((hi - start) / res - 1e-9))
    return start, n


def target_grid(sources: Sequence[Source], crs: str | None = None, res: float | None = None,
                extent: Sequence[float] | None = None, extent_crs: str | None = None) -> Grid:
    """The grid everything is read onto: the first file's unless ``crs``/``res`` override it."""
    first = sources[0]
    src_crs = CRS.from_wkt(first.crs)
    dst_crs = CRS.from_user_input(crs) if crs else src_crs
    same_crs = dst_crs == src_crs
    if res is None:
        if same_crs:
            rx, ry = first.affine.a, -first.affine.e
        else:
            t, _, _ = calculate_default_transform(src_crs, dst_crs, first.width, first.height,
                                                  *first.bounds)
            rx = ry = t.a
    else:
        rx = ry = float(res)
    # union of all sources in the target CRS
    boxes = [_bounds_in(s, dst_crs.to_wkt()) for s in sources]
    union = (min(b[0] for b in boxes), min(b[1] for b in boxes),
             max(b[2] for b in boxes), max(b[3] for b in boxes))
    if extent is not None:
        ecrs = CRS.from_user_input(extent_crs) if extent_crs else dst_crs
        minx, miny, maxx, maxy = transform_bounds(ecrs, dst_crs, *extent, densify_pts=21)
        if minx >= maxx or miny >= maxy:
            raise InputError(f"--extent {','.join(map(str, extent))} is empty: give minx,miny,maxx,maxy.")
        if maxx <= union[0] or minx >= union[2] or maxy <= union[1] or miny >= union[3]:
            raise InputError(
                f"--extent {','.join(map(str, extent))} lies outside the data, whose bounds are "
                f"{', '.join(f'{v:.6g}' for v in union)} in {dst_crs.to_string()}; check the extent "
                "and --extent-crs.")
    else:
        minx, miny, maxx, maxy = union
    # anchor on the first file's pixel grid when it is the target grid, else on res multiples
    keep_first = same_crs and abs(rx - first.affine.a) < EPS * rx and abs(ry + first.affine.e) < EPS * ry
    ax, ay = (first.affine.c, first.affine.f) if keep_first else (0.0, 0.0)
    x0, width = _snap(minx, maxx, ax, rx)
    ytop, height = _snap(-maxy, -miny, -ay, ry)
    return Grid(dst_crs.to_wkt(), tuple(Affine(rx, 0, x0, 0, -ry, -ytop))[:6], width, height)


@dataclass(frozen=True)
class Mosaic:
    """Several rasters read as one, on ``grid``, with the chosen 1-based ``bands``."""

    sources: tuple[Source, ...]
    grid: Grid
    bands: tuple[int, ...]
    dtype: str
    options: tuple = ()
    skipped: tuple = ()      # {"input", "error"} of inputs left out (--skip-bad-inputs)
    dequantize: bool = False  # apply each band's scale/offset on read (quantised feature rasters)
    alphaearth: bool = False  # int8 AlphaEarth codes: read as sign(v) (v / 127.5)^2, -128 invalid

    @property
    def count(self) -> int:
        return len(self.bands)

    def __getstate__(self) -> dict:
        """Pickled without its spatial index (rebuilt where it is needed)."""
        state = dict(self.__dict__)
        state.pop("_index", None)
        return state

    @cached_property
    def _index(self):
        """An R-tree (shapely's STRtree) over the sources' bounds in the grid's CRS."""
        from shapely import STRtree, box

        return STRtree([box(*_bounds_in(s, self.grid.crs)) for s in self.sources])

    def _sources_in(self, bounds) -> list[Source]:
        """The sources that overlap ``bounds`` (more than touching), in their order: an R-tree
        query, not a scan of every source (a window of a 16,384-file mosaic meets a few)."""
        x0, y0, x1, y1 = bounds
        if len(self.sources) <= INDEX_FROM:
            near = range(len(self.sources))
        else:
            from shapely import box

            near = sorted(self._index.query(box(x0, y0, x1, y1)).tolist())
        hits = []
        for i in near:
            sb = _bounds_in(self.sources[i], self.grid.crs)
            if sb[0] < x1 and sb[2] > x0 and sb[1] < y1 and sb[3] > y0:
                hits.append(self.sources[i])
        return hits

    def subset(self, row: int, col: int, rows: int, cols: int) -> "Mosaic":
        """This mosaic with only the sources that a window of the grid reads, in their order
        (the same reads, so the same pixels): what a read task carries, never every source."""
        return replace(self, sources=tuple(self._sources_in(self.grid.window_bounds(row, col, rows, cols))))

    def read(self, row: int, col: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a window of the target grid: ``(data (bands, rows, cols), valid (rows, cols))``.

        Pixels outside every file, on nodata, or masked in any selected band are invalid
        (their data value is 0). The window may extend past the grid (edge tiles).
        """
        data, valid = self._read(row, col, rows, cols)
        if self.alphaearth:
            from .quantize import ALPHAEARTH_NODATA, alphaearth_values

            valid &= ~(data == ALPHAEARTH_NODATA).any(axis=0)
            data = alphaearth_values(data)
            data[:, ~valid] = 0
        return data, valid

    def _read(self, row: int, col: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        found = self._sources_in(self.grid.window_bounds(row, col, rows, cols))
        if len(found) >= VRT_FROM:
            many = self._read_many(found, row, col, rows, cols)
            if many is not None:
                return many
        data, valid = None, np.zeros((rows, cols), dtype=bool)
        options = dict(self.options)
        for src in found:
            if valid.all():
                break
            part, ok, (r0, c0) = self._read_source(src, row, col, rows, cols, options)
            if part is None:
                continue
            h, w = ok.shape
            if data is None and (h, w) == (rows, cols) and part.dtype == self.dtype:
                part[:, ~ok] = 0     # the first file over the whole window: its arrays are the window's
                data, valid = part, ok
                continue
            data = np.zeros((self.count, rows, cols), dtype=self.dtype) if data is None else data
            dst_valid = valid[r0:r0 + h, c0:c0 + w]
            take = ok & ~dst_valid
            np.copyto(data[:, r0:r0 + h, c0:c0 + w], part, where=take[None])
            dst_valid |= take
        if data is None:
            data = np.zeros((self.count, rows, cols), dtype=self.dtype)
        return data, valid

    def _read_many(self, found: Sequence[Source], row, col, rows, cols):
        """The window read from many files at once, through one VRT: GDAL opens them in C
        (~0.2 ms each, against ~1.7 ms for each ``rasterio.open``: a 2048-px window over 256
        files of 128 px took 0.58 s file by file and 0.20 s so, one file 0.17 s). Only where
        that gives the very same pixels and validity as file by file: local files on the
        grid, not overlapping in the window, of the mosaic's type and one nodata value, whose
        validity is that value (``Source.plain``), nothing dequantised. Else None."""
        nodata = {repr(s.nodata) for s in found}
        if (len(nodata) > 1 or (self.dequantize and any(s.scaled(self.bands) for s in found))
                or not all(s.plain and not s.parts and s.dtype == self.dtype and storage.is_local(s.url)
                           and _aligned(s, self.grid) for s in found)):
            return None
        g = self.grid.affine
        covered = np.zeros((rows, cols), dtype=np.uint8)
        rects = []
        for s in found:
            r0, c0 = round((s.affine.f - g.f) / g.e) - row, round((s.affine.c - g.c) / g.a) - col
            covered[max(r0, 0):max(r0 + s.height, 0), max(c0, 0):max(c0 + s.width, 0)] += 1
            rects.append((s, r0, c0))
        if covered.max() > 1:       # overlapping files: the first valid one wins, file by file
            return None
        gdal_type = GDAL_TYPES.get(self.dtype)
        if gdal_type is None:
            return None
        sources = "".join(
            f'<SimpleSource><SourceFilename>{escape(os.path.abspath(storage.local_path(s.url)))}</SourceFilename>'
            f'<SourceBand>{{band}}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{s.width}" ySize="{s.height}"/>'
            f'<DstRect xOff="{c0}" yOff="{r0}" xSize="{s.width}" ySize="{s.height}"/></SimpleSource>'
            for s, r0, c0 in rects)
        xml = (f'<VRTDataset rasterXSize="{cols}" rasterYSize="{rows}">'
               + "".join(f'<VRTRasterBand dataType="{gdal_type}" band="{i + 1}">{sources.format(band=b)}'
                         "</VRTRasterBand>" for i, b in enumerate(self.bands)) + "</VRTDataset>")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.Env(**no_probes(any(s.sidecars for s in found))), rasterio.open(xml) as ds:
                    data = ds.read()
        except RasterioError:       # file by file, whose errors name the file
            return None
        valid = covered.astype(bool)
        if found[0].nodata is not None:
            valid &= nodata_valid(data, found[0].nodata)
        data[:, ~valid] = 0
        return data, valid

    def _read_source(self, src: Source, row, col, rows, cols, options):
        if src.parts:
            return self._read_item(src, row, col, rows, cols, options)
        return self._read_file(src, self.bands, row, col, rows, cols, options)

    def _read_item(self, src: Source, row, col, rows, cols, options):
        """A STAC item's bands, each read from its asset onto the window; valid where all are."""
        data = np.zeros((self.count, rows, cols), dtype=self.dtype)
        ok = np.ones((rows, cols), dtype=bool)
        for i, b in enumerate(self.bands):
            part, band = src.parts[b - 1], src.part_bands[b - 1]
            arr, part_ok, (r0, c0) = self._read_file(part, (band,), row, col, rows, cols, options)
            if arr is None:
                return None, None, (0, 0)
            h, w = part_ok.shape
            data[i, r0:r0 + h, c0:c0 + w] = arr[0]
            inside = np.zeros_like(ok)
            inside[r0:r0 + h, c0:c0 + w] = part_ok
            ok &= inside
        return data, ok, (0, 0)

    def _read_file(self, src: Source, bands, row, col, rows, cols, options):
        try:
            ds = _cached(src.url, options, src.sidecars)
            if _aligned(src, self.grid):
                g, s = self.grid.affine, src.affine
                srow0 = row + round((g.f - s.f) / s.e)
                scol0 = col + round((g.c - s.c) / s.a)
                r0, c0 = max(srow0, 0), max(scol0, 0)
                r1, c1 = min(srow0 + rows, src.height), min(scol0 + cols, src.width)
                if r1 <= r0 or c1 <= c0:
                    return None, None, (0, 0)
                data, ok = read_valid(ds, bands, Window(c0, r0, c1 - c0, r1 - r0))
                offset = (r0 - srow0, c0 - scol0)
            else:
                key = (src.url, self.grid)
                vrt = _WARPED.get(key)
                if vrt is None or vrt.closed:
                    vrt = _WARPED[key] = WarpedVRT(
                        ds, crs=self.grid.crs, transform=self.grid.affine, width=self.grid.width,
                        height=self.grid.height, resampling=Resampling.nearest,
                        add_alpha=ds.nodata is None)
                r0, c0 = max(row, 0), max(col, 0)
                r1, c1 = min(row + rows, self.grid.height), min(col + cols, self.grid.width)
                if r1 <= r0 or c1 <= c0:
                    return None, None, (0, 0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NodataShadowWarning)
                    arr = vrt.read(bands, window=Window(c0, r0, c1 - c0, r1 - r0), masked=True)
                data, ok = masked_valid(arr)
                offset = (r0 - row, c0 - col)
        except RasterioError as exc:
            raise RasterOpenError(f"reading input raster {src.url!r} failed "
                                  f"(GDAL says: {str(exc).splitlines()[0]}).") from exc
        if self.dequantize and src.scaled(bands):
            from .quantize import dequantize

            index = [b - 1 for b in bands]
            data = dequantize(data, np.array(src.scales)[index], np.array(src.offsets)[index])
        return data, ok, offset


def folder_of(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def survey_folders(urls: Sequence[str], options: dict | None) -> tuple[set[str], dict]:
    """``(bare, versions)`` from one listing of each folder of ``urls``.

    ``bare``: the folders that hold no sidecar of the inputs: no file, other than the inputs,
    named after one (``a.tif.aux.xml``, ``a.msk``, ``a.tfw``, ``a.ovr``...). GDAL looks for
    sidecars on every open by listing the folder: for a folder of 16,384 files that was O(n)
    per open (a read over 1,024 of them: 1.0-1.4 s, 0.5-0.7 s without).

    ``versions``: each object's ``(size, version)`` in an object store, the version a digest
    of its ETag (or generation), which tells a later run that it is unchanged
    (:func:`.sources.describe_all`); the listing has them at no extra request.

    Remote listings are forgotten before and after (a cached listing of 10^4 objects is
    scanned on every later lookup)."""
    names: dict[str, set[str]] = {}
    for u in urls:
        names.setdefault(folder_of(u), set()).add(u.rsplit("/", 1)[-1])
    remote = [u for u in urls if not storage.is_local(u)]
    fs = storage.filesystem(remote[0], options) if remote else None
    if fs:
        fs.invalidate_cache()
    bare, versions = set(), {}
    for folder, inputs in names.items():
        try:
            if storage.is_local(folder):
                entries = os.listdir(storage.local_path(folder))
            else:
                listing = fs.ls(folder, detail=True)
                entries = [str(e["name"]).rsplit("/", 1)[-1] for e in listing]
                for name, e in zip(entries, listing):
                    version = storage.object_version(e) if name in inputs else 0
                    if version:
                        versions[f"{folder}/{name}"] = (int(e.get("size") or 0), version)
        except (OSError, ValueError, NotImplementedError):     # describe() says what is wrong
            continue
        stems = {n.split(".", 1)[0] for n in inputs}
        if not any(e not in inputs and e.split(".", 1)[0] in stems for e in entries):
            bare.add(folder)
    if fs:
        fs.invalidate_cache()
    return bare, versions


def select_bands(sources: Sequence[Source], bands: Sequence[int | str] | None) -> tuple[int, ...]:
    """1-based band indices from ``--bands`` (indices or names), the same in every file.

    Files that differ in band count or names are an error naming them and their bands, unless
    the selection picks bands that every file has, at the same index, under the same name.
    """
    listing = "; ".join(s.band_list() for s in sources[:6]) + (" ..." if len(sources) > 6 else "")
    if bands is None:
        first = sources[0]
        def differ(s: Source) -> bool:
            return s.count != first.count or any(a and b and a != b for a, b in zip(s.names, first.names))

        if any(differ(s) for s in sources):
            raise InputError(f"the input rasters differ in their bands: {listing}. Select bands every "
                             "file has with --bands (indices or names), or encode them separately.")
        return tuple(range(1, first.count + 1))
    out = []
    for token in bands:
        if isinstance(token, str) and not token.isdigit():
            found = {s.url: s.band_index(token) for s in sources}
            lacking = [s for s in sources if found[s.url] is None]
            if lacking:
                raise InputError(f"--bands: no band is called {token!r} in {lacking[0].band_list()}. "
                                 "Use a band name the file has, or a 1-based index.")
            if len(set(found.values())) > 1:
                raise InputError(f"--bands: band {token!r} is at different positions in the input "
                                 f"rasters ({listing}); reorder the files' bands first (gdal_translate -b).")
            out.append(next(iter(found.values())))
            continue
        index = int(token)
        short = [s for s in sources if not 1 <= index <= s.count]
        if short:
            raise InputError(f"--bands: band {index} is out of range for {short[0].url!r}, which has "
                             f"{short[0].count} band(s) (valid: 1..{short[0].count}, 1-based).")
        names = {s.names[index - 1] for s in sources if s.names and s.names[index - 1]}
        if len(names) > 1:
            raise InputError(f"--bands: band {index} is not the same band in every file "
                             f"({' vs '.join(sorted(names))}): {listing}. Select by name instead.")
        out.append(index)
    return tuple(out)


def open_mosaic(inputs: Sequence[str | Source], bands: Sequence[int | str] | None = None, crs: str | None = None,
                res: float | None = None, extent: Sequence[float] | None = None,
                extent_crs: str | None = None, s3_endpoint: str | None = None,
                skip_bad_inputs: bool = False, dequantize: bool = False, grid: Grid | None = None,
                alphaearth: bool = False) -> Mosaic:
    """Expand globs, read every file's metadata (several at once, or from the files' sources
    index, :mod:`.sources`), check bands and build the target grid.

    ``inputs`` may also hold sources already described (STAC items, :mod:`.stac`); ``grid``
    imposes the target grid (the dates of a STAC ``--by-date`` run share one).

    ``dequantize``: bands with a GDAL scale/offset are read as floats (``stored * scale +
    offset``), and an int8 raster without them is an error (its codes are not features),
    unless it is AlphaEarth's (``alphaearth``, or int8 bands named A00..A63): its codes are
    then read as :func:`.quantize.alphaearth_values`, -128 invalid.

    A file that cannot be opened (missing, unreachable, corrupt) is an error naming it, or
    with ``skip_bad_inputs`` is left out and listed in ``Mosaic.skipped`` (its area is then
    nodata, or outside the grid). Not every file may be bad.
    """
    if not inputs:
        raise InputError("no input raster given.")
    urls: list[str | Source] = []
    first = inputs[0]
    first_url = (first.parts or (first,))[0].url if isinstance(first, Source) else str(first)
    options = storage.storage_options(first_url, s3_endpoint)
    for pattern in inputs:
        if isinstance(pattern, Source):
            urls.append(pattern)
            continue
        pattern = str(pattern)
        if sources_io.is_index(pattern):   # a sources or block product index: no file opened
            if not storage.exists(pattern, options):
                raise RasterOpenError(f"index {pattern!r} does not exist; check the path.")
            entries, declared = sources_io.read_index(pattern, options)
            urls.extend(source for source, _ in entries.values())
            if len(inputs) == 1 and not (crs or res or extent):   # a product index: its own raster
                grid = grid or declared
            continue
        found = storage.expand(pattern, options)
        if not found:
            raise RasterOpenError(f"input pattern {pattern!r} matches no file; check the path/glob.")
        urls.extend(found)
    paths = [u for u in urls if not isinstance(u, Source)]
    files = [u.url for u in urls if isinstance(u, Source) and not u.parts]      # from an index
    bare, versions = survey_folders(paths + files, options)
    # headers from the sources index of these files where it is current, else read (in parallel)
    found = dict(zip(paths, sources_io.describe_all(paths, partial(describe_in, frozenset(bare), options),
                                                    versions=versions)))
    # whether their folders hold sidecars is asked every run (an index cannot know)
    results = [u if isinstance(u, Source) else found[u] for u in urls]
    results = [r if not isinstance(r, Source) or r.parts or r.sidecars == (folder_of(r.url) not in bare)
               else replace(r, sidecars=not r.sidecars) for r in results]
    described, skipped = [], []
    for u, result in zip(urls, results):
        if isinstance(result, RasterOpenError):
            if not skip_bad_inputs:
                raise RasterOpenError(f"{result} (or pass --skip-bad-inputs to leave it out)") from None
            skipped.append({"input": u, "error": str(result)})
            warn(f"skipping bad input: {result}")
        elif isinstance(result, Exception):
            raise result
        else:
            described.append(result)
    if not described:
        raise RasterOpenError(f"none of the {len(urls)} input rasters could be opened; first: "
                              f"{skipped[0]['error']}")
    sources = tuple(described)
    # what the checks below look at, once per kind of file (10^4 blocks of a product: one kind)
    kinds: dict = {}
    for s in sources:
        kinds.setdefault((s.count, s.dtype, s.names, s.scales, s.offsets, s.parts), s)
    kinds = list(kinds.values())
    bands = select_bands(kinds, bands)
    grid = grid or target_grid(sources, crs, res, extent, extent_crs)
    files = [p for s in sources for p in (s.parts or (s,))]
    warped = [s for s in files if not _aligned(s, grid)]
    if warped:
        first = warped[0]
        warn(f"{len(warped)} of {len(files)} input rasters are not on the target grid "
             f"({crs_name(grid.crs)}, {grid.res[0]:g} x {grid.res[1]:g}), e.g. {first.url!r} "
             f"({crs_name(first.crs)}, {first.affine.a:g} x {-first.affine.e:g}): they are warped "
             "onto it with nearest-neighbour resampling. Choose the grid with --crs/--res, or "
             "reproject them first (gdalwarp) to control the resampling.")
    dtype = np.result_type(*[np.dtype(s.dtype) for s in kinds]).name
    from .quantize import ALPHAEARTH_BANDS, ALPHAEARTH_PREFIX

    named = all(s.dtype == "int8" and not s.scaled(bands) and s.names == ALPHAEARTH_BANDS for s in kinds)
    alphaearth = alphaearth or (dequantize and named)
    if alphaearth:
        for s in kinds:
            if s.dtype != "int8":
                raise InputError(f"{s.url!r} is {s.dtype}, not the int8 codes of AlphaEarth embeddings "
                                 f"that {ALPHAEARTH_PREFIX!r} declares; drop the prefix to read its values "
                                 "as they are.")
        dtype = "float32"
    elif dequantize:
        for s in kinds:
            if s.dtype == "int8" and not s.scaled(bands):
                raise InputError(
                    f"{s.url!r} holds int8 codes without a scale and offset per band, so its values "
                    "are not the features they encode. Declare them (value = code * scale + offset), "
                    f"e.g. `gdal_edit.py -scale 0.01 -offset 0 {s.url}` (one value per band is also "
                    "accepted), or write the features as int8 with `rayvit encode --dtype int8`. "
                    f"AlphaEarth embeddings: name the input {ALPHAEARTH_PREFIX}{s.url}.")
        if any(s.scaled(bands) for s in kinds):
            dtype = "float32"
    return Mosaic(sources, grid, tuple(int(b) for b in bands), dtype,
                  storage.freeze(options) if options else (), tuple(skipped), dequantize, alphaearth)
