"""Zarr products (``--format zarr``): a Zarr v3 store the xarray world opens natively.

Layout of ``features.zarr`` (what ``xarray.open_zarr`` and rioxarray read as one variable
with its CRS)::

    zarr.json            the group, with consolidated metadata (written at commit)
    features/            (band, y, x) float16/float32, NaN = no data, sharded: one shard per
                         output block, inner chunks of all bands x up to 64 x 64 px, zstd 1
    band/ y/ x/          coordinates: band names, pixel-centre northings and eastings
    spatial_ref/         CF grid mapping: ``crs_wkt``/``spatial_ref`` (WKT) and ``GeoTransform``

Each write task writes its block as its own shard (a whole shard region: nothing is read
back, no two tasks touch one file), so the store is written in parallel by the workers; the
driver writes only metadata: the skeleton at start (inside ``blocks/``), then at commit the
consolidated metadata and one rename to ``features.zarr`` (nothing named ``features.*`` exists
before). In an object store the shards go straight to their final keys and the store's root
``zarr.json`` is uploaded last but the sidecar (the store cannot be opened before). Resume uses
the manifest of shards, as for GeoTIFF blocks.

The shards use Zarr's ``sharding_indexed`` codec, which GDAL reads from 3.11 on; rayvit's
analysis stages read Zarr products with zarr-python (:class:`ZarrRaster`), not GDAL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..grid import Block
from . import storage

ARRAY = "features"
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
    """A Zarr store (a ``.zarr`` path, or a directory holding ``zarr.json``), or one date of a
    time stack (``STORE.zarr@YYYY-MM-DD``)."""
    path = str(path).rstrip("/")
    store, _, date = path.rpartition("@")
    if date and store.rstrip("/").endswith(".zarr"):
        return True
    return path.endswith(".zarr") or (storage.is_local(path) and os.path.isfile(os.path.join(path, "zarr.json")))


def create(path: str, crs: str, transform: Sequence[float], width: int, height: int,
           names: Sequence[str], dtype: str, block_size: int, attributes: dict | None = None,
           times: Sequence[str] | None = None) -> None:
    """Write the store's skeleton: the group, the sharded feature array and the coordinates;
    with ``times`` (ISO dates) a time stack ``(time, band, y, x)``, one shard per block and date."""
    zarr = _zarr()
    from rasterio.crs import CRS
    from zarr.codecs import ZstdCodec

    root = zarr.open_group(path, mode="w")
    d, inner = len(names), inner_side(block_size)
    lead = (len(times),) if times else ()
    root.create_array(ARRAY, shape=(*lead, d, height, width), shards=(*(1,) * len(lead), d, block_size, block_size),
                      chunks=(*(1,) * len(lead), d, inner, inner), dtype=dtype, fill_value=np.nan,
                      compressors=ZstdCodec(level=ZSTD_LEVEL),
                      dimension_names=(*(("time",) if times else ()), "band", "y", "x"),
                      attributes={"grid_mapping": "spatial_ref", "coordinates": "spatial_ref",
                                  **(attributes or {})})
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
    in the same order, the same index). Returns the shards linked."""
    import shutil

    root, n = os.path.join(source, ARRAY, "c", "0"), 0
    for dirpath, _, files in os.walk(root):
        for name in filter(str.isdigit, files):     # not a writer's leftover temporary file
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            dest = os.path.join(target, ARRAY, "c", str(time), "0", rel)
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
           dict(first.attrs) | {"long_name": "ViT features, time stack"}, times=days)
    shards = sum(link_shards(s, staging, t) for t, s in enumerate(stores))
    consolidate(staging)
    os.rename(staging, final)
    record = {"rayvit_version": __version__, "stage": "stack", "products": stores, "dates": days,
              "shards": shards, "output": "features.zarr"}
    storage.atomic_write(sidecar, json.dumps(record, indent=1))      # last: the stack is complete
    return final, days, shards


def encode_shard(data: np.ndarray, side: int, inner: int) -> bytes:
    """The bytes of the shard of one ``side`` x ``side`` block, ``data (bands, rows, cols)`` (a
    block at the array's edge may be smaller), as the Zarr v3 ``sharding_indexed`` codec lays
    them out with this store's codecs: each inner chunk ``(bands, inner, inner)`` as a zstd frame
    of its little-endian bytes, in zarr-python's (Morton) order (edge chunks padded with the
    fill value NaN; chunks wholly past the array absent), then the index (``(offset, nbytes)``
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
            full = np.full((bands, inner, inner), np.nan, data.dtype)
            full[:, :chunk.shape[1], :chunk.shape[2]] = chunk
            chunk = full
        frame = codec.encode(np.ascontiguousarray(chunk, dtype=data.dtype.newbyteorder("<")))
        index[0, i, j] = (offset, len(frame))
        parts.append(frame)
        offset += len(frame)
    table = index.tobytes()
    return b"".join([*parts, table, np.uint32(google_crc32c.value(table)).astype("<u4").tobytes()])


def _variable(root, path: str) -> str:
    """The raster variable of a Zarr group: rayvit's ``features``, else its one array of
    dimensions ``(band, y, x)`` (any leading name) with a ``grid_mapping`` (what
    ``xarray``/``rioxarray`` write for a georeferenced DataArray)."""
    if ARRAY in root.array_keys():
        return ARRAY
    found = [name for name in root.array_keys()
             if root[name].ndim == 3 and "grid_mapping" in root[name].attrs
             and tuple(root[name].metadata.dimension_names or ())[-2:] == ("y", "x")]
    if len(found) != 1:
        raise InputError(f"{path!r} holds {len(found) or 'no'} georeferenced (band, y, x) variables"
                         + (f" ({', '.join(found)})" if found else "") + "; rayvit reads a store with one.")
    return found[0]


def _opened(path: str, options: tuple) -> dict:
    """zarr's keyword arguments to open ``path``: an object store's fsspec options."""
    return {} if storage.is_local(path) else {"storage_options": storage.unfreeze(options) or {}}


def _morton(i: int, j: int) -> int:
    """The Morton code of inner chunk (row ``i``, column ``j``): their bits interleaved, the
    row's first (zarr-python's order of a shard's chunks, ``zarr.core.indexing.decode_morton``)."""
    return sum((((i >> k) & 1) << (2 * k)) | (((j >> k) & 1) << (2 * k + 1)) for k in range(max(i, j).bit_length()))


def shard_file(block: Block) -> str:
    """The shard of ``block``, relative to the store (Zarr v3's default chunk key encoding)."""
    return f"{ARRAY}/c/0/{block.by}/{block.bx}"


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

    def write(self, block: Block, data: np.ndarray, valid: np.ndarray) -> dict:
        """Write one block (nothing for a block without valid pixels: its shard stays absent
        and reads as NaN) and return its record ``{by, bx, file, data, sha256}``."""
        record = {"by": block.by, "bx": block.bx, "file": f"{self.prefix}/{shard_file(block)}",
                  "data": bool(valid.any())}
        if not record["data"]:
            return record
        import hashlib

        shard = encode_shard(data.astype(self.dtype, copy=False), self.side, self.inner)  # float16 -> 32: exact
        if storage.is_local(self.store):
            path = os.path.join(self.store, shard_file(block))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            storage.atomic_write(path, shard)
        else:       # one PUT: an object is whole or absent
            url = storage.join(self.store, shard_file(block))
            storage.filesystem(self.store, storage.unfreeze(self.options)).pipe_file(url, shard)
        record["sha256"] = hashlib.sha256(shard).hexdigest()
        return record


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

    @classmethod
    def open(cls, path: str, bands: Sequence[int] | None = None, s3_endpoint: str | None = None) -> "ZarrRaster":
        from .mosaic import Grid

        zarr = _zarr()
        path, _, date = str(path).rstrip("/").partition("@")
        options = () if storage.is_local(path) else storage.freeze(storage.storage_options(path, s3_endpoint))
        try:
            root = zarr.open_group(path, mode="r", **_opened(path, options))
            name = _variable(root, path)
            arr = root[name]
            ref = root[arr.attrs.get("grid_mapping", "spatial_ref")]
            transform, crs = affine_of(ref.attrs["GeoTransform"]), ref.attrs["crs_wkt"]
        except InputError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path!r} is not a georeferenced Zarr raster (no {ARRAY!r} array, or no "
                             "variable (band, y, x) whose grid mapping holds crs_wkt and GeoTransform, as "
                             "rioxarray writes them) or cannot be read.") from exc
        times, time = (), None
        if arr.ndim == 4:
            times = tuple(str(t) for t in np.array(root["time"][:], dtype="datetime64[D]"))
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
        return cls(path, grid, chosen, str(arr.dtype), times=times, time=time, options=options, array=name)

    @property
    def count(self) -> int:
        return len(self.bands)

    def decimated(self, height: int, width: int) -> np.ndarray:
        """The selected bands on a ``height`` x ``width`` grid, nearest neighbour as GDAL's
        decimated reads pick pixels (a quicklook), float32 with NaN for no data."""
        from ..grid import nearest

        ys, xs = nearest(self.grid.height, height), nearest(self.grid.width, width)
        return self._select(np.array(self.bands) - 1, ys, xs)

    def _select(self, bands: np.ndarray, ys, xs) -> np.ndarray:
        """``bands`` (0-based, flattened over time for a whole stack) at rows ``ys``, columns ``xs``."""
        arr = _zarr().open_array(storage.join(self.path, self.array), mode="r", **_opened(self.path, self.options))
        if arr.ndim == 3:
            return arr.get_orthogonal_selection((bands, ys, xs)).astype(np.float32)
        if self.time is not None:
            return arr.get_orthogonal_selection((self.time, bands, ys, xs)).astype(np.float32)
        out = arr.get_orthogonal_selection((slice(None), slice(None), ys, xs)).astype(np.float32)
        return out.reshape(-1, *out.shape[2:])[bands]

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
