"""The write stage: one output block -> one COG, written atomically where the product lives,
and a small record for the driver's manifest. Runs in Ray worker tasks (encode's write stage,
the analysis stages' apply tasks), never needs the driver.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import rasterio
import zstandard

from ..grid import Block
from . import quantize, storage

# Measured on a 252 x 252 x 768 float16 block of smooth low-rank features + noise (2 cores):
# zstd level 1 wrote it in 0.70 s against 0.89 s at level 3, *smaller* (73.3 vs 74.8 MB);
# for float16 (stored with NBITS=16) the integer predictor cost 0.58 s for 78.0 MB against
# 0.70 s for 73.3 MB with the floating-point one. GDAL threads (NUM_THREADS) added CPU and
# saved no time once several write tasks share the cores.
ZSTD_LEVEL = 1
# Overviews of a many-band raster cost more than the raster: GDAL builds them band by band
# over pixel-interleaved tiles (a 448 x 448 x 768 COG took minutes against 4 s without), and
# averaged features are not features. Display rasters (PCA, clusters, ...) keep them.
OVERVIEW_MAX_BANDS = 16
# Blocks of more bands are band-interleaved: each band's tiles are compressed on their own,
# straight from the (bands, rows, cols) array. Pixel interleaving made GDAL transpose every
# block first; measured on a 126 x 126 x 768 float16 block (2 cores, zstd 1, predictor 2):
# 455 ms pixel-interleaved, 193 ms band-interleaved, 94 ms band-interleaved with the float16
# words written as they are (:func:`mark_float16`). Same size (23.3 vs 23.6 MB). A VRT reads
# its sources band by band, so band-interleaved blocks also suit the product that reads them.
BAND_INTERLEAVE_MIN = OVERVIEW_MAX_BANDS + 1


def _compression(dtype: str, compress: str, level_key: str) -> dict:
    out = {"compress": compress}
    if compress in ("deflate", "zstd", "lzw"):
        out["predictor"] = 3 if dtype == "float32" and compress != "lzw" else 2
    if compress == "zstd":
        out[level_key] = ZSTD_LEVEL
    if dtype == "float16":
        out["nbits"] = 16
    return out


def storage_dtype(dtype: str) -> str:
    """float16 is stored as GDAL Float32 with NBITS=16 (GDAL 3.10 has no Float16 type)."""
    return "float32" if dtype in ("float16", "float32") else dtype


def _tile(n: int) -> int:
    """GeoTIFF tile side for ``n`` pixels: a multiple of 16, at most 256."""
    return min(256, -(-n // 16) * 16)


def block_profile(dtype: str, compress: str, nodata: float = np.nan, rows: int = 256, cols: int = 256,
                  count: int = 1) -> dict:
    """Creation options of an output block: a tiled GeoTIFF (header and IFD first) written
    directly. The COG driver writes a temporary copy first and took 0.79 s against 0.58 s
    for the same block; blocks are ingredients of a VRT or of the single COG. Tiles fit the
    block: a 126-px block in 256-px tiles packed and compressed 4x its pixels (write tasks
    8.5 instead of ~3 CPU-ms per tile at D = 768). Many bands: band-interleaved."""
    return {"driver": "GTiff", "dtype": storage_dtype(dtype), "nodata": nodata, "tiled": True,
            "blockxsize": _tile(cols), "blockysize": _tile(rows), "bigtiff": "if_safer",
            "interleave": "band" if count >= BAND_INTERLEAVE_MIN else "pixel",
            **_compression(dtype, compress, "zstd_level")}


def raw_float16_profile(profile: dict) -> dict:
    """``profile`` of a float16 block (Float32, NBITS=16, nodata NaN) turned into the UInt16
    profile that writes the same file from the float16 words, to be finished by
    :func:`mark_float16`. GDAL 3.10 has no Float16 type: given float32 values it converts each
    one to 16 bits itself (1.3 ms per tile at D = 768, more than compressing it)."""
    out = {k: v for k, v in profile.items() if k != "nbits"}
    return out | {"dtype": "uint16", "nodata": 0}


_SAMPLE_FORMAT, _GDAL_NODATA, _IEEEFP = 339, 42113, 3
_TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_BYTE_COUNTS = 322, 323, 324, 325
_WORD = {1: "B", 2: "B", 3: "H", 4: "I", 5: "Q", 6: "b", 7: "B", 8: "h", 9: "i", 10: "q", 11: "f", 12: "d",
         16: "Q", 17: "q"}     # TIFF field type -> struct code of one value (RATIONALs as 8 bytes)


@dataclass(frozen=True)
class _Entry:
    type: int
    count: int
    at: int         # file offset of the entry
    values: int     # file offset of its values (inside the entry when they fit)


def _ifd(f) -> tuple[str, bool, dict[int, _Entry]]:
    """The first IFD of an open TIFF (classic or BigTIFF): ``(byte order, big, {tag: entry})``."""
    f.seek(0)
    head = f.read(16)
    e = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(e + "H", head[2:4])[0] == 43
    n_fmt, word, size = ("Q", "Q", 20) if big else ("H", "I", 12)
    inline = 8 if big else 4
    (ifd,) = struct.unpack(e + word, head[8:16] if big else head[4:8])
    f.seek(ifd)
    (n,) = struct.unpack(e + n_fmt, f.read(struct.calcsize(n_fmt)))
    start = f.tell()
    raw = f.read(n * size)
    entries = {}
    for i in range(n):
        tag, kind, count, value = struct.unpack(e + "HH" + word + f"{inline}s", raw[i * size:(i + 1) * size])
        at = start + i * size
        here = struct.calcsize(_WORD.get(kind, "B")) * count <= inline
        entries[tag] = _Entry(kind, count, at, at + 4 + struct.calcsize(word) if here
                              else struct.unpack(e + word, value)[0])
    return e, big, entries


def mark_float16(path: str) -> None:
    """Turn a UInt16 GeoTIFF written with :func:`raw_float16_profile` into the float16
    (IEEE half, nodata NaN) file GDAL writes for Float32 with NBITS=16, in place: the pixel
    bytes are the same, only two tags differ (SampleFormat: unsigned -> IEEE float;
    GDAL_NODATA: "0" -> "nan", both fixed-size). The result is byte-identical to GDAL's."""
    with open(path, "r+b") as f:
        e, big, entries = _ifd(f)
        if not {_SAMPLE_FORMAT, _GDAL_NODATA} <= entries.keys():
            raise RuntimeError(f"internal error: {path} lacks the SampleFormat or GDAL_NODATA tag")
        fmt, nodata = entries[_SAMPLE_FORMAT], entries[_GDAL_NODATA]
        f.seek(fmt.values)
        f.write(struct.pack(e + "H", _IEEEFP) * fmt.count)
        word, inline = ("Q", 8) if big else ("I", 4)
        f.seek(nodata.at + 4)
        f.write(struct.pack(e + word, 4) + b"nan\x00".ljust(inline, b"\x00"))


# Tiles rayvit compresses itself (:func:`fill_tiles`), GDAL writing only the header: a 126 x 126 x
# 768 float16 block of the null encoder's features (2 cores, in process, best of 5, two runs)
# took 1.21-1.23 CPU-ms per tile with zstd 1 against 1.49 for GDAL's own write, and 0.54
# against 0.73-0.76 uncompressed (GDAL's block cache and tile packing); the same bytes.
FAST_COMPRESS = ("zstd", "none")


def fill_tiles(path: str, data: np.ndarray, compress: str, predictor: int = 1, level: int = ZSTD_LEVEL) -> None:
    """Write the pixels of a band-interleaved tiled TIFF that GDAL created with ``SPARSE_OK``
    and no pixels (every tile offset 0): each tile of each band of ``data (bands, rows,
    cols)``, padded with zeros to whole tiles, ``predictor`` 2 (horizontal differencing, as
    libtiff undoes it) or 1, compressed (zstd ``level``, one frame per tile as libtiff's
    codec writes it) or not, appended in order, then the tile offsets and byte counts
    written into the arrays GDAL left for them. The file is the one GDAL writes itself."""
    bands, rows, cols = data.shape
    with open(path, "r+b") as f:
        e, _, entries = _ifd(f)
        offsets, counts = entries[_TILE_OFFSETS], entries[_TILE_BYTE_COUNTS]
        tile_w, tile_h = (_scalar(f, e, entries[tag]) for tag in (_TILE_WIDTH, _TILE_LENGTH))
        ny, nx = -(-rows // tile_h), -(-cols // tile_w)
        if offsets.count != bands * ny * nx or offsets.count != counts.count:
            raise RuntimeError(f"internal error: {path} has {offsets.count} tiles, not {bands} x {ny} x {nx}")
        # whole tiles padded with zeros, as GDAL pads them, differenced in one pass over the block
        padded = np.zeros((bands, ny * tile_h, nx * tile_w), data.dtype)
        if predictor == 2:
            np.subtract(data[..., 1:], data[..., :-1], out=padded[:, :rows, 1:cols])
            padded[:, :rows, 0:cols:tile_w] = data[..., ::tile_w]       # each tile row starts afresh
            if cols % tile_w:
                np.negative(data[..., -1], out=padded[:, :rows, cols])  # 0 - the last column
        else:
            padded[:, :rows, :cols] = data
        encode = _zstd_frame(level) if compress == "zstd" else bytes
        f.seek(0, os.SEEK_END)
        at, where, sizes = f.tell(), [], []
        for b in range(bands):
            for ty in range(ny):
                for tx in range(nx):
                    part = padded[b, ty * tile_h:(ty + 1) * tile_h, tx * tile_w:(tx + 1) * tile_w]
                    chunk = encode(part if nx == 1 else np.ascontiguousarray(part))
                    f.write(chunk)
                    where.append(at)
                    sizes.append(len(chunk))
                    at += len(chunk)
        for entry, values in ((offsets, where), (counts, sizes)):
            code = _WORD[entry.type]
            if max(values) >= 2 ** (8 * struct.calcsize(code)):
                raise RuntimeError(f"internal error: {path}'s tile table cannot hold {max(values)}")
            f.seek(entry.values)
            f.write(struct.pack(f"{e}{len(values)}{code}", *values))


def _zstd_frame(level: int):
    """``bytes -> bytes``: one zstd frame as libtiff's ZSTD codec writes a tile (streamed, no
    content size), so that the tiles are the very bytes GDAL writes."""
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=False)

    def frame(data) -> bytes:
        stream = compressor.compressobj()
        return stream.compress(data) + stream.flush()
    return frame


def _scalar(f, e: str, entry: _Entry) -> int:
    """An entry's (first) value."""
    code = _WORD[entry.type]
    f.seek(entry.values)
    return struct.unpack(e + code, f.read(struct.calcsize(code)))[0]


def cog_profile(dtype: str, compress: str, nodata: float = np.nan, count: int = 1) -> dict:
    """Creation options of a single-file product: a COG (float16 = Float32 with NBITS=16)."""
    profile = {"driver": "COG", "dtype": storage_dtype(dtype), "nodata": nodata, "blocksize": 256,
               "bigtiff": "if_safer", **_compression(dtype, compress, "level")}
    if count > OVERVIEW_MAX_BANDS:
        profile["overviews"] = "NONE"
    return profile


def block_file(block: Block) -> str:
    return f"{block.name}.tif"


@dataclass(frozen=True)
class BlockWriter:
    """Writes blocks of one product into ``dest`` (a local block directory or an object-store
    prefix): everything a worker needs, and small enough to ship with every task."""

    dest: str
    crs: str
    transform: tuple[float, ...]
    count: int
    descriptions: Sequence[str]
    dtype: str = "float32"
    compress: str = "zstd"
    nodata: float = np.nan
    colormap: dict | None = None
    options: tuple = ()     # frozen fsspec options of an object-store ``dest`` (endpoint)
    ranges: bool = False    # records carry each band's min/max (for quantisation at commit)
    scales: tuple = ()      # GDAL band scale/offset of quantised blocks (value = code * s + o)
    offsets: tuple = ()

    def write(self, block: Block, data: np.ndarray, valid: np.ndarray) -> dict:
        """Write a block (COG; nothing for a block without valid pixels) and return its record
        ``{by, bx, file, data, sha256}`` (and ``min``/``max`` per band with ``ranges``). Atomic: a temporary name, then a rename (local) or
        one upload (object store), so a reader never sees half a block."""
        record = {"by": block.by, "bx": block.bx, "file": block_file(block), "data": bool(valid.any())}
        if not record["data"]:
            return record
        remote = not storage.is_local(self.dest)
        final = storage.join(self.dest, record["file"])
        if self.ranges:
            record["min"], record["max"] = quantize.band_ranges(data, valid)
        a = rasterio.Affine(*self.transform)
        transform = rasterio.Affine(a.a, 0, a.c + block.col * a.a, 0, a.e, a.f + block.row * a.e)
        profile = block_profile(self.dtype, self.compress, self.nodata, block.rows, block.cols, self.count)
        # float16 features arrive as float16: their words are written as they are
        raw = data.dtype == np.float16 and self.dtype == "float16" and np.isnan(self.nodata)
        if raw:
            data, profile = data.view(np.uint16), raw_float16_profile(profile)
        elif data.dtype == np.float16:
            data = data.astype(np.float32)   # exact

        # band-interleaved integer words (float16 as uint16), zstd or none: GDAL writes the
        # header and rayvit the tiles (fill_tiles)
        fast = (profile["interleave"] == "band" and self.compress in FAST_COMPRESS
                and profile.get("predictor", 1) in (1, 2) and data.dtype.kind in "iu")
        if fast:
            profile = {**profile, "sparse_ok": True}

        def write_to(tmp: str) -> None:
            with rasterio.open(tmp, "w", width=block.cols, height=block.rows, count=self.count,
                               crs=self.crs, transform=transform, **profile) as dst:
                # tags before pixels: GDAL then writes the IFD once, at the start of the file
                dst.descriptions = tuple(self.descriptions)
                if self.colormap:
                    dst.write_colormap(1, self.colormap)
                if self.scales:
                    dst.scales, dst.offsets = self.scales, self.offsets
                if not fast:
                    dst.write(data)
            if fast:
                fill_tiles(tmp, data, self.compress, profile.get("predictor", 1))
            if raw:
                mark_float16(tmp)
            record["sha256"] = storage.sha256_file(tmp)

        if not remote:
            storage.atomic_write(final, write_to)
            return record
        fd, tmp = tempfile.mkstemp(suffix=".tif", prefix=f".{block.name}.")
        os.close(fd)
        try:
            write_to(tmp)
            storage.filesystem(self.dest, storage.unfreeze(self.options)).put_file(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return record
