"""Zarr products (``--format zarr``): a Zarr v3 store the xarray world opens natively.

Layout of ``features.zarr`` (what ``xarray.open_zarr`` and rioxarray read as one variable
with its CRS)::

    zarr.json            the group, with consolidated metadata (written at commit)
    features/            (band, y, x) float16/float32, NaN = no data, sharded: one shard per
                         output block, inner chunks of all bands x up to 64 x 64 px, zstd 1
    band/ y/ x/          coordinates: band names, pixel-centre northings and eastings
    spatial_ref/         CF grid mapping: ``crs_wkt``/``spatial_ref`` (WKT) and ``GeoTransform``
    scales/              int8 stores only: (y, x) float32, each pixel's scale (value = code x
                         scale, NaN = no data; :func:`.quantize.per_pixel`), declared on the group
                         as the geoemb convention's ``per_pixel_scale`` quantisation

An analysis stage's product (``--format zarr``) is the same layout in ``NAME.zarr``, its variable
named after the product, an integer product's nodata its CF ``_FillValue``.

Each write task writes its block as its own shard (a whole shard region: nothing is read
back, no two tasks touch one file), so the store is written in parallel by the workers; the
driver writes only metadata: the skeleton at start (inside ``blocks/``), then at commit the
consolidated metadata and one rename to ``features.zarr`` (nothing named ``features.*`` exists
before). In an object store the shards go straight to their final keys and the store's root
``zarr.json`` is uploaded last but the sidecar (the store cannot be opened before). Resume uses
the manifest of shards, as for GeoTIFF blocks.

The shards use Zarr's ``sharding_indexed`` codec, which GDAL reads from 3.11 on; rayvit's
analysis stages read Zarr products with zarr-python (:class:`ZarrRaster`), not GDAL, and with
them others' georeferenced Zarr: xarray/rioxarray's (a CF grid mapping) and TESSERA's (a group
per UTM zone, ``(time, band, y, x)`` int8 embeddings with per-pixel ``scales``, georeferenced by
the Zarr ``spatial:``/``proj:`` conventions; the layout of geotessera's ``geotessera/zarr.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..grid import Block
from . import quantize, storage

ARRAY = "features"
SCALES = "scales"  # an int8 store's per-pixel scales (quantize.per_pixel): (y, x), or (time, y, x)
INNER_MAX = 64     # inner chunk side at most (px): a window read decodes little beyond it
ZSTD_LEVEL = 1     # as the GeoTIFF blocks (io.cog)
EMPTY = 2**64 - 1  # a shard index entry of an absent inner chunk


def _zarr():
    try:
        import zarr
    except ImportError as exc:
        raise InputError("Zarr products need zarr>=3: pip install 'rayvit[xarray]'.") from exc
    return zarr


def inner_side(block_size: int) -> int:
    """The largest divisor of ``block_size`` that is at most :data:`INNER_MAX`."""
    return max(d for d in range(1, min(block_size, INNER_MAX) + 1) if block_size % d == 0)


def is_zarr(path: str) -> bool:
    """A Zarr store (a ``.zarr`` path, a group in one, or a directory holding ``zarr.json``), or
    one date of a time stack (``STORE.zarr@YYYY-MM-DD``)."""
    path = str(path).rstrip("/")
    store, _, date = path.rpartition("@")
    path = store.rstrip("/") if date and (".zarr" in store) else path
    return (path.endswith(".zarr") or ".zarr/" in path
            or (storage.is_local(path) and os.path.isfile(os.path.join(path, "zarr.json"))))


def create(path: str, crs: str, transform: Sequence[float], width: int, height: int,
           names: Sequence[str], dtype: str, block_size: int, attributes: dict | None = None,
           times: Sequence[str] | None = None, array: str = ARRAY, fill: float = np.nan,
           per_pixel: bool = False) -> None:
    """Write the store's skeleton: the group, the sharded ``array`` and the coordinates;
    with ``times`` (ISO dates) a time stack ``(time, band, y, x)``, one shard per block and date.
    ``fill``: the no-data value (an integer product's; also its CF ``_FillValue``);
    ``per_pixel``: int8 codes with a :data:`SCALES` array beside them (:func:`.quantize.per_pixel`),
    declared as the geoemb convention's ``per_pixel_scale`` quantisation."""
    zarr = _zarr()
    from rasterio.crs import CRS
    from zarr.codecs import ZstdCodec

    root = zarr.open_group(path, mode="w")
    d, inner = len(names), inner_side(block_size)
    lead = (len(times),) if times else ()
    ones, time_dim = (1,) * len(lead), ("time",) if times else ()
    georef = {"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"}
    integer = np.issubdtype(np.dtype(dtype), np.integer)
    root.create_array(array, shape=(*lead, d, height, width), shards=(*ones, d, block_size, block_size),
                      chunks=(*ones, d, inner, inner), dtype=dtype, fill_value=0 if per_pixel else fill,
                      compressors=ZstdCodec(level=ZSTD_LEVEL), dimension_names=(*time_dim, "band", "y", "x"),
                      attributes={**georef, **({"_FillValue": fill} if integer and not per_pixel else {}),
                                  **(attributes or {})})
    if per_pixel:
        root.create_array(SCALES, shape=(*lead, height, width), shards=(*ones, block_size, block_size),
                          chunks=(*ones, inner, inner), dtype="float32", fill_value=np.nan,
                          compressors=ZstdCodec(level=ZSTD_LEVEL), dimension_names=(*time_dim, "y", "x"),
                          attributes={**georef, "long_name": "per-pixel scale: value = code x scale; NaN: no data"})
        root.attrs["geoemb:quantization"] = {
            "method": "per_pixel_scale", "original_dtype": "float32", "quantized_dtype": "int8",
            "scale": {"type": "array", "array_name": SCALES, "nodata": "NaN"}}
    a = transform
    coords = {"band": np.array(list(names), dtype=str),
              "y": a[5] + (np.arange(height) + 0.5) * a[4],
              "x": a[2] + (np.arange(width) + 0.5) * a[0]}
    if times:       # CF time: days since the epoch (xarray decodes it to datetime64)
        day = root.create_array("time", shape=(len(times),), chunks=(len(times),), dtype="int64",
                                dimension_names=("time",),
                                attributes={"units": "days since 1970-01-01", "calendar": "proleptic_gregorian"})
        day[:] = np.array(times, dtype="datetime64[D]").astype(np.int64)
    for name, values in coords.items():
        arr = root.create_array(name, shape=values.shape, chunks=values.shape, dimension_names=(name,),
                                dtype=str if name == "band" else values.dtype)  # variable-length UTF-8
        arr[:] = values
    wkt = CRS.from_user_input(crs).to_wkt()
    root.create_array("spatial_ref", shape=(), dtype="int64", fill_value=0, attributes={
        "crs_wkt": wkt, "spatial_ref": wkt, "GeoTransform": " ".join(repr(float(v)) for v in
                                                                     (a[2], a[0], a[1], a[5], a[3], a[4]))})


def affine_of(geotransform: str) -> tuple[float, ...]:
    """A grid mapping's GDAL ``GeoTransform`` text -> the affine ``(a, b, c, d, e, f)`` tuple."""
    c, a, b, f, d, e = (float(v) for v in geotransform.split())
    return a, b, c, d, e, f


def consolidate(path: str) -> None:
    _zarr().consolidate_metadata(path)


def link_shards(source: str, target: str, time: int) -> int:
    """Put the shards of the 3-D store ``source`` at ``time`` of the time stack ``target``:
    hard links (copies across file systems), no decoding. A shard of ``(band, y, x)`` and one
    of ``(1, band, y, x)`` with the same inner chunks are the same bytes (the same inner chunks
    in the same order, the same index); so are those of an int8 store's ``(y, x)`` scales and
    ``(1, y, x)``. Returns the shards linked."""
    return sum(_link_array(os.path.join(source, array, "c"), os.path.join(target, array, "c", str(time)))
               for array in (ARRAY, SCALES))


def _link_array(root: str, dest_root: str) -> int:
    import shutil

    n = 0
    for dirpath, _, files in os.walk(root):
        for name in filter(str.isdigit, files):     # not a writer's leftover temporary file
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            dest = os.path.join(dest_root, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:
                os.link(os.path.join(dirpath, name), dest)
            except OSError:
                shutil.copyfile(os.path.join(dirpath, name), dest)
            n += 1
    return n


def _product(path: str) -> str:
    """The Zarr store of a product directory or store path."""
    path = str(path).rstrip("/")
    store = path if path.endswith(".zarr") else os.path.join(path, "features.zarr")
    if not os.path.isfile(os.path.join(store, "zarr.json")):
        raise InputError(f"{path!r} is not a Zarr feature product (no {store!r}); encode each date with "
                         "`rayvit encode ... --format zarr`.")
    return store


def _date(value: str, path: str) -> str:
    try:
        return str(np.datetime64(value, "D"))
    except ValueError:
        raise InputError(f"no date for {path!r}: its directory is not named YYYY-MM-DD; give --dates "
                         "(one per input, in order).") from None


def stack_products(inputs: Sequence[str], output: str, dates: Sequence[str] | None = None,
                   overwrite: bool = False) -> tuple[str, list[str], int]:
    """Stack the Zarr feature products ``inputs`` (one per date; dates from ``dates`` or from
    each input's directory name) into ``output/features.zarr``: a ``(time, band, y, x)`` store
    whose shards are the dates' own, linked (:func:`link_shards`), built beside the output and
    renamed into place, its sidecar ``features.json`` written last. Returns ``(store, dates,
    shards)``."""
    import json
    import shutil

    from ..errors import OutputError
    from ..version import __version__

    zarr = _zarr()
    stores = [_product(p) for p in inputs]
    if len(stores) < 2:
        raise InputError("stack needs the products of at least two dates.")
    if dates is not None and len(dates) != len(stores):
        raise InputError(f"--dates gives {len(dates)} dates for {len(stores)} inputs; give one per input.")
    names = [os.path.basename(os.path.dirname(s)) for s in stores]
    days = [_date(d, s) for d, s in zip(dates or names, stores)]
    if len(set(days)) != len(days) or days != sorted(days):
        raise InputError(f"the dates must be distinct and in order; got {', '.join(days)}.")
    arrays = [zarr.open_group(s, mode="r") for s in stores]
    first, ref = arrays[0]["features"], arrays[0]["spatial_ref"].attrs
    shape = (first.shape, first.shards, first.chunks, str(first.dtype), ref["crs_wkt"], ref["GeoTransform"])
    for store, root in zip(stores[1:], arrays[1:]):
        a, r = root["features"], root["spatial_ref"].attrs
        other = (a.shape, a.shards, a.chunks, str(a.dtype), r["crs_wkt"], r["GeoTransform"])
        if other != shape:
            raise InputError(f"{store!r} does not match {stores[0]!r} (shape, shards, dtype or grid differ): a "
                             "stack's dates share one grid; encode them with the same --crs/--res/--extent "
                             "and --block-size (a --stac --by-date run does).")
    final = os.path.join(str(output), "features.zarr")
    sidecar = os.path.join(str(output), "features.json")
    if os.path.exists(final) or os.path.exists(sidecar):
        if not overwrite:
            raise OutputError(f"{output!r} already holds a product; use --overwrite to replace it, or choose "
                              "another -o.")
        if os.path.exists(sidecar):
            os.remove(sidecar)                  # first: what is left is no longer complete
        shutil.rmtree(final, ignore_errors=True)
    staging = os.path.join(str(output), ".features.zarr.staging")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(str(output), exist_ok=True)
    d, height, width = first.shape
    create(staging, ref["crs_wkt"], affine_of(ref["GeoTransform"]), width, height,
           [str(b) for b in arrays[0]["band"][:]], str(first.dtype), first.shards[1],
           dict(first.attrs) | {"long_name": "ViT features, time stack"}, times=days,
           per_pixel=SCALES in arrays[0].array_keys())
    shards = sum(link_shards(s, staging, t) for t, s in enumerate(stores))
    consolidate(staging)
    os.rename(staging, final)
    record = {"rayvit_version": __version__, "stage": "stack", "products": stores, "dates": days,
              "shards": shards, "output": "features.zarr"}
    storage.atomic_write(sidecar, json.dumps(record, indent=1))      # last: the stack is complete
    return final, days, shards


def encode_shard(data: np.ndarray, side: int, inner: int, fill: float = np.nan) -> bytes:
    """The bytes of the shard of one ``side`` x ``side`` block, ``data (bands, rows, cols)`` (a
    block at the array's edge may be smaller), as the Zarr v3 ``sharding_indexed`` codec lays
    them out with this store's codecs: each inner chunk ``(bands, inner, inner)`` as a zstd frame
    of its little-endian bytes, in zarr-python's (Morton) order (edge chunks padded with the
    array's ``fill`` value; chunks wholly past the array absent), then the index (``(offset, nbytes)``
    uint64 per chunk, C order; absent: 2^64 - 1) and its CRC32C. Encoded here rather than through zarr-python, whose write of the
    same shard cost ~0.8 CPU-ms per tile more (its event loop and copies; D = 768 float16)."""
    import google_crc32c
    import numcodecs

    codec = numcodecs.Zstd(level=ZSTD_LEVEL)
    bands, rows, cols = data.shape
    n = side // inner
    index = np.full((1, n, n, 2), EMPTY, dtype="<u8")
    parts, offset = [], 0
    for i, j in sorted(((i, j) for i in range(n) for j in range(n)), key=lambda c: _morton(*c)):
        if i * inner >= rows or j * inner >= cols:
            continue
        chunk = data[:, i * inner:(i + 1) * inner, j * inner:(j + 1) * inner]
        if chunk.shape[1:] != (inner, inner):
            full = np.full((bands, inner, inner), fill, data.dtype)
            full[:, :chunk.shape[1], :chunk.shape[2]] = chunk
            chunk = full
        frame = codec.encode(np.ascontiguousarray(chunk, dtype=data.dtype.newbyteorder("<")))
        index[0, i, j] = (offset, len(frame))
        parts.append(frame)
        offset += len(frame)
    table = index.tobytes()
    return b"".join([*parts, table, np.uint32(google_crc32c.value(table)).astype("<u4").tobytes()])


def _variable(root, path: str, scales: str) -> str:
    """The raster variable of a Zarr group: rayvit's ``features``, else its one array of
    dimensions ``(band, y, x)`` or ``(time, band, y, x)`` (any leading names) that is
    georeferenced: with a CF ``grid_mapping`` (what ``xarray``/``rioxarray`` write for a
    georeferenced DataArray), or in a group with the Zarr ``spatial:`` convention's transform
    (TESSERA's stores). ``scales``: a per-pixel scale array, not a variable."""
    if ARRAY in root.array_keys():
        return ARRAY
    group_georef = "spatial:transform" in root.attrs
    found = [name for name in root.array_keys()
             if name != scales and root[name].ndim in (3, 4) and tuple(root[name].metadata.dimension_names
                                                                       or ())[-2:] == ("y", "x")
             and ("grid_mapping" in root[name].attrs or group_georef)]
    if len(found) != 1:
        groups = sorted(root.group_keys())
        if not found and groups:
            hint = (f"; it holds the groups {', '.join(groups)}: name one, e.g. {path.rstrip('/')}/{groups[0]}"
                    if len(groups) > 1 else "")
            if not hint:
                return ""       # one group: the caller descends into it
            raise InputError(f"{path!r} holds no georeferenced variable at its root{hint}.")
        raise InputError(f"{path!r} holds {len(found) or 'no'} georeferenced (band, y, x) variables"
                         + (f" ({', '.join(found)})" if found else "") + "; rayvit reads a store with one.")
    return found[0]


def _group(path: str, options: tuple):
    """``(group, its per-pixel scale array or "", its raster variable or "" for a store of one
    group)`` at ``path``."""
    root = _zarr().open_group(location(path, options), mode="r")
    scales = _quantization(root, path, options)
    return root, scales, _variable(root, path, scales)


def store_root(path: str) -> tuple[str, str]:
    """``(store, group)`` of a path into a Zarr store: ``a/b.zarr/utm31`` -> (``a/b.zarr``, ``utm31``)."""
    path = str(path).rstrip("/")
    head, sep, tail = path.partition(".zarr/")
    return (head + ".zarr", tail) if sep else (path, "")


def _quantization(root, path: str, options: tuple) -> str:
    """The per-pixel scale array of the group ``root`` at ``path`` (``""`` if none), from the
    geoemb convention's ``geoemb:quantization`` (``per_pixel_scale``) on the group or its
    store's root."""
    q = root.attrs.get("geoemb:quantization")
    store = store_root(path)[0]
    if q is None and store != str(path).rstrip("/"):
        q = _zarr().open_group(location(store, options), mode="r").attrs.get("geoemb:quantization")
    if not q:
        return ""
    if q.get("method") != "per_pixel_scale" or q.get("scale", {}).get("type") != "array":
        raise InputError(f"{store!r}: quantisation {q.get('method')!r} is not supported (rayvit reads "
                         "geoemb per_pixel_scale with a scale array).")
    return q["scale"]["array_name"]


def _georef(root, arr, path: str) -> tuple[tuple[float, ...], str]:
    """``(affine, crs)`` of a variable: its CF grid mapping (``crs_wkt`` + ``GeoTransform``), or
    the group's Zarr ``spatial:``/``proj:`` conventions (``spatial:transform`` + ``proj:wkt2``,
    ``proj:code`` or ``proj:projjson``)."""
    if "grid_mapping" in arr.attrs:
        ref = root[arr.attrs["grid_mapping"]].attrs
        return affine_of(ref["GeoTransform"]), ref["crs_wkt"]
    a = root.attrs
    crs = a.get("proj:wkt2") or a.get("proj:code") or a.get("proj:projjson")
    if crs is None:
        raise KeyError("proj:")
    if isinstance(crs, dict):
        import json

        crs = json.dumps(crs)
    return tuple(float(v) for v in a["spatial:transform"][:6]), crs


def _dates(root) -> tuple[str, ...]:
    """A time stack's dates: CF days (rayvit's stacks) as ISO dates, else the values (TESSERA's
    years) as text."""
    time = root["time"]
    if str(time.attrs.get("units", "")).startswith("days since 1970-01-01"):
        return tuple(str(t) for t in np.array(time[:], dtype="datetime64[D]"))
    return tuple(str(t) for t in time[:])


def location(path: str, options: tuple = ()):
    """What zarr (or xarray) opens for ``path``: the path itself, or for an object store a
    zarr ``FsspecStore`` with its fsspec options that asks for a suffix byte range (how zarr
    reads a shard's index) as an offset from the object's size. Azure's adlfs sends a suffix
    as a negative offset, which the service refuses ("Content-Range ... malformed"), and the
    GCS emulator answers one with the whole object; S3 and GCS serve suffixes, and lose one
    HEAD request per shard read."""
    if storage.is_local(path):
        return path
    return _sized_store().from_url(path, storage_options=storage.unfreeze(options) or {}, read_only=True)


@lru_cache(maxsize=1)
def _sized_store():
    _zarr()
    from zarr.abc.store import OffsetByteRequest, SuffixByteRequest
    from zarr.storage import FsspecStore

    class SizedStore(FsspecStore):
        async def _offset(self, key, byte_range):
            if isinstance(byte_range, SuffixByteRequest):
                size = (await self.fs._info(f"{self.path.rstrip('/')}/{key}"))["size"]
                return OffsetByteRequest(max(0, size - byte_range.suffix))
            return byte_range

        async def get(self, key, prototype, byte_range=None):
            try:
                byte_range = await self._offset(key, byte_range)
            except FileNotFoundError:
                return None
            return await super().get(key, prototype, byte_range)

        async def get_partial_values(self, prototype, key_ranges):
            ranges = []
            for key, byte_range in key_ranges:
                try:
                    ranges.append((key, await self._offset(key, byte_range)))
                except FileNotFoundError:
                    ranges.append((key, byte_range))
            return await super().get_partial_values(prototype, ranges)

    return SizedStore


def _morton(i: int, j: int) -> int:
    """The Morton code of inner chunk (row ``i``, column ``j``): their bits interleaved, the
    row's first (zarr-python's order of a shard's chunks, ``zarr.core.indexing.decode_morton``)."""
    return sum((((i >> k) & 1) << (2 * k)) | (((j >> k) & 1) << (2 * k + 1)) for k in range(max(i, j).bit_length()))


def shard_file(block: Block, array: str = ARRAY, band: bool = True) -> str:
    """The shard of ``block`` in ``array`` (with a band axis: one shard across it), relative
    to the store (Zarr v3's default chunk key encoding)."""
    return f"{array}/c/{'0/' if band else ''}{block.by}/{block.bx}"


@dataclass(frozen=True)
class ZarrBlockWriter:
    """Writes blocks as shards of the store ``store`` (a local path): the write stage's
    writer of Zarr products, picklable and small like :class:`rayvit.io.cog.BlockWriter`."""

    store: str
    prefix: str     # the store's path relative to the manifest's directory
    dtype: str = "float32"
    side: int = 0   # shard side (the block size)
    inner: int = 0  # inner chunk side
    options: tuple = ()     # frozen fsspec options of an object-store ``store`` (endpoint)
    array: str = ARRAY      # the variable (a product's name)
    nodata: float = np.nan  # its no-data value
    per_pixel: bool = False  # int8 codes + per-pixel scales (quantize.per_pixel), from float blocks

    def write(self, block: Block, data: np.ndarray, valid: np.ndarray) -> dict:
        """Write one block (nothing for a block without valid pixels: its shard stays absent
        and reads as no data) and return its record ``{by, bx, file, data, sha256}``. An int8
        store's scales shard is written before its codes' shard (the record's file): a block
        whose codes exist is whole."""
        name = shard_file(block, self.array)
        record = {"by": block.by, "bx": block.bx, "file": f"{self.prefix}/{name}", "data": bool(valid.any())}
        if not record["data"]:
            return record
        import hashlib

        if self.per_pixel:
            codes, scales = quantize.per_pixel(data, valid)
            self._put(shard_file(block, SCALES, band=False), encode_shard(scales[None], self.side, self.inner))
            shard = encode_shard(codes, self.side, self.inner, 0)
        else:
            shard = encode_shard(data.astype(self.dtype, copy=False), self.side, self.inner, self.nodata)  # f16 -> 32: exact
        self._put(name, shard)
        record["sha256"] = hashlib.sha256(shard).hexdigest()
        return record

    def _put(self, name: str, shard: bytes) -> None:
        if storage.is_local(self.store):
            path = os.path.join(self.store, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            storage.atomic_write(path, shard)
        else:       # one PUT: an object is whole or absent
            storage.filesystem(self.store, storage.unfreeze(self.options)).pipe_file(storage.join(self.store, name), shard)


@dataclass(frozen=True)
class ZarrRaster:
    """A Zarr product as the analysis stages read it (what :class:`rayvit.io.mosaic.Mosaic`
    offers: ``grid``, ``count``, ``bands``, ``dtype``, ``sources``, ``read``), through
    zarr-python; picklable (each process opens the store itself)."""

    path: str
    grid: object
    bands: tuple[int, ...]
    stored: str = "float32"     # the store's dtype (reads are float32)
    dtype: str = "float32"
    sources: tuple = ()
    times: tuple[str, ...] = ()  # a time stack's dates; its bands are then (time, band) flattened
    time: int | None = None      # one date of a time stack (``STORE@DATE``): its bands only
    options: tuple = ()          # frozen fsspec options of an object-store ``path``
    array: str = ARRAY           # the variable read: rayvit's ``features``, or another's (see ``open``)
    scales: str = ""             # its per-pixel scale array (int8 stores, TESSERA's): value = code x scale
    nodata: float | None = None  # an integer variable's no-data value (CF ``_FillValue``), read as NaN

    @classmethod
    def open(cls, path: str, bands: Sequence[int] | None = None, s3_endpoint: str | None = None) -> "ZarrRaster":
        from .mosaic import Grid

        path, _, date = str(path).rstrip("/").partition("@")
        options = () if storage.is_local(path) else storage.freeze(storage.storage_options(path, s3_endpoint))
        try:
            root, scales, name = _group(path, options)
            if not name:                    # a store of one group (a TESSERA store of one UTM zone)
                path = storage.join(path, next(iter(root.group_keys())))
                root, scales, name = _group(path, options)
            arr = root[name]
            transform, crs = _georef(root, arr, path)
        except InputError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path!r} is not a georeferenced Zarr raster (no {ARRAY!r} array, or no "
                             "variable (band, y, x) whose grid mapping holds crs_wkt and GeoTransform, as "
                             "rioxarray writes them, or with the spatial:/proj: conventions on its group) "
                             "or cannot be read.") from exc
        times, time = (), None
        if arr.ndim == 4:
            times = _dates(root)
        if date:
            if date not in times:
                raise InputError(f"{path!r} has no date {date!r}" + (f"; its dates: {', '.join(times)}." if times
                                                                     else ": it is not a time stack."))
            time = times.index(date)
        d, height, width = arr.shape[-3:]
        d = d * len(times) if times and time is None else d
        grid = Grid(crs, transform, width, height)
        chosen = tuple(bands) if bands else tuple(range(1, d + 1))
        if not all(1 <= b <= d for b in chosen):
            raise InputError(f"--bands {list(chosen)} is out of range for {path!r}, which has {d} bands.")
        integer = np.issubdtype(arr.dtype, np.integer) and not scales
        return cls(path, grid, chosen, str(arr.dtype), times=times, time=time, options=options, array=name,
                   scales=scales, nodata=arr.attrs.get("_FillValue") if integer else None)

    @property
    def count(self) -> int:
        return len(self.bands)

    def attributes(self) -> dict:
        """The variable's attributes (a Zarr analysis product's ``colormap``, categories, ...)."""
        return dict(_zarr().open_array(location(storage.join(self.path, self.array), self.options), mode="r").attrs)

    def decimated(self, height: int, width: int) -> np.ndarray:
        """The selected bands on a ``height`` x ``width`` grid, nearest neighbour as GDAL's
        decimated reads pick pixels (a quicklook), float32 with NaN for no data."""
        from ..grid import nearest

        ys, xs = nearest(self.grid.height, height), nearest(self.grid.width, width)
        return self._select(np.array(self.bands) - 1, ys, xs)

    def _select(self, bands: np.ndarray, ys, xs) -> np.ndarray:
        """``bands`` (0-based, flattened over time for a whole stack) at rows ``ys``, columns
        ``xs``, float32 (dequantised by the per-pixel scales, NaN where they say no data)."""
        def array(name):
            return _zarr().open_array(location(storage.join(self.path, name), self.options), mode="r")

        arr = array(self.array)
        whole = arr.ndim == 4 and self.time is None     # every date: bands are (time, band) flattened
        lead = () if arr.ndim == 3 else (slice(None),) if whole else (self.time,)
        out = arr.get_orthogonal_selection((*lead, slice(None) if whole else bands, ys, xs))
        if self.scales:
            out = quantize.per_pixel_values(out, array(self.scales).get_orthogonal_selection((*lead, ys, xs)))[0]
        out = out.astype(np.float32, copy=False)
        if self.nodata is not None:
            out[out == np.float32(self.nodata)] = np.nan
        return out.reshape(-1, *out.shape[2:])[bands] if whole else out

    def read(self, row: int, col: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """``(data (bands, rows, cols) float32, valid (rows, cols))``: valid where no selected
        band is NaN; invalid pixels and the window past the grid are 0."""
        h, w = max(0, min(rows, self.grid.height - row)), max(0, min(cols, self.grid.width - col))
        out = np.zeros((self.count, rows, cols), np.float32)
        valid = np.zeros((rows, cols), bool)
        if h and w:
            part = self._select(np.array(self.bands) - 1, slice(row, row + h), slice(col, col + w))
            ok = ~np.isnan(part).any(axis=0)
            out[:, :h, :w] = np.where(ok, part, 0)
            valid[:h, :w] = ok
        return out, valid
