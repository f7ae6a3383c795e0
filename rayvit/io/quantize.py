"""Linear quantisation of feature rasters to 8 bits, with a scale and offset per band.

A band stored as integers ``q`` means ``q * scale + offset`` (GDAL's band scale and offset:
``gdalinfo``, QGIS, ``gdal_translate -unscale`` and rasterio's ``scales``/``offsets`` see them).
Each band's range ``[lo, hi]`` over the valid pixels of the whole product maps onto the full
integer range, so nothing is clipped and every value comes back within half a step
(``scale / 2``). One code is kept for nodata.

The parameters follow the STAC embeddings extension's Quantization Object
(``emb:quantization``: method, original and quantised dtype, scale, offset).
"""

from __future__ import annotations

import numpy as np

# dtype -> (lowest code, highest code, nodata code): 254 steps either way
CODES = {"int8": (-127, 127, -128), "uint8": (1, 255, 0)}
QUANTIZED = tuple(CODES)


def is_quantized(dtype: str) -> bool:
    return str(dtype) in CODES


def nodata(dtype: str) -> int:
    return CODES[dtype][2]


def band_ranges(data: np.ndarray, valid: np.ndarray) -> tuple[list[float], list[float]]:
    """Per band ``(min, max)`` of ``data (bands, rows, cols)`` over the ``valid`` pixels."""
    values = data[:, np.asarray(valid, bool)]
    if values.shape[1] == 0:
        return [], []
    return values.min(axis=1).astype(float).tolist(), values.max(axis=1).astype(float).tolist()


def params(lo, hi, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` per band that map ``[lo, hi]`` onto the codes of ``dtype``; a
    constant band gets scale 1 (its one value is the offset plus the lowest code)."""
    qlo, qhi, _ = CODES[dtype]
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    span = hi - lo
    scale = np.where(span > 0, span / (qhi - qlo), 1.0)
    return scale, lo - qlo * scale


def quantize(data: np.ndarray, valid: np.ndarray, scale: np.ndarray, offset: np.ndarray,
             dtype: str) -> np.ndarray:
    """``data (bands, rows, cols)`` as codes of ``dtype``; invalid pixels get the nodata code."""
    qlo, qhi, empty = CODES[dtype]
    shape = (-1,) + (1,) * (data.ndim - 1)
    valid = np.asarray(valid, bool)
    codes = np.rint((data.astype(np.float64) - offset.reshape(shape)) / scale.reshape(shape))
    out = np.clip(np.where(valid, codes, 0), qlo, qhi).astype(dtype)   # invalid: NaN, never cast
    out[:, ~valid] = empty
    return out


def dequantize(codes: np.ndarray, scale, offset) -> np.ndarray:
    """Codes ``(bands, ...)`` back to float32 values."""
    shape = (-1,) + (1,) * (codes.ndim - 1)
    scale, offset = np.asarray(scale, np.float64), np.asarray(offset, np.float64)
    return (codes * scale.reshape(shape) + offset.reshape(shape)).astype(np.float32)


def stac_object(dtype: str, scale, offset, original: str = "float32") -> dict:
    """The STAC embeddings extension's ``emb:quantization`` object."""
    return {"method": "linear per band: value = code * scale + offset; range [min, max] over the "
                      f"valid pixels onto codes {CODES[dtype][0]}..{CODES[dtype][1]}, nodata "
                      f"{CODES[dtype][2]}",
            "original_dtype": original, "quantized_dtype": dtype,
            "scale": [float(s) for s in scale], "offset": [float(o) for o in offset]}


# AlphaEarth Foundations (Google DeepMind's Satellite Embedding dataset, V1, annual): its
# GeoTIFF/COG distribution stores each of the 64 unit-vector components as an int8 code ``v``
# with a non-linear quantisation, value = sign(v) * (v / 127.5) ** 2, and -128 for no data
# (as the dataset's documentation of the int8 export describes; the float values lie in
# [-1, 1] and cluster near 0, where the square root spacing keeps more precision).
ALPHAEARTH_NODATA = -128
ALPHAEARTH_PREFIX = "alphaearth:"
ALPHAEARTH_BANDS = tuple(f"A{i:02d}" for i in range(64))    # the dataset's band names


def alphaearth_path(path: str) -> tuple[str, bool]:
    """``(path, AlphaEarth codes)`` of an input named ``alphaearth:PATH`` or ``PATH``."""
    path = str(path)
    return (path[len(ALPHAEARTH_PREFIX):], True) if path.startswith(ALPHAEARTH_PREFIX) else (path, False)


def alphaearth_values(codes: np.ndarray) -> np.ndarray:
    """AlphaEarth int8 codes -> float32 values ``sign(v) * (v / 127.5) ** 2`` (computed in
    float64, rounded once; the nodata code is the caller's to mask)."""
    v = codes.astype(np.float64) / 127.5
    return (np.sign(v) * v * v).astype(np.float32)
