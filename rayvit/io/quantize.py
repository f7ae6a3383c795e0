"""8-bit quantisation of feature rasters: linear with a scale and offset per band (GeoTIFF), or int8

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


# Per-pixel scales (``--format zarr --dtype int8``): each pixel's vector is stored as int8
# codes and one float32 scale, value = code * scale, with the scale its largest magnitude / 127
# (so every component comes back within half a step of its own pixel's scale, whatever the other
# pixels hold). It needs nothing from other blocks, so each write task quantises its own block in
# one pass (the per-band scales above need the whole product's ranges, a second pass); it is the
# geoemb Zarr convention's ``per_pixel_scale`` method, as TESSERA publishes its embeddings. A
# scale that is not finite, or not > 0, means no data (rayvit writes NaN; TESSERA +inf and NaN).
PER_PIXEL_STEPS = 127


def per_pixel(data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``data (bands, rows, cols)`` -> ``(codes int8 (bands, rows, cols), scales float32 (rows,
    cols))``: scale = max |value| / 127 (1 for an all-zero vector), code = rint(value / scale);
    invalid pixels get code 0 and scale NaN. Computed in float32."""
    x = data.astype(np.float32, copy=False)
    peak = np.abs(x).max(axis=0)
    scales = np.where(peak > 0, peak / np.float32(PER_PIXEL_STEPS), np.float32(1)).astype(np.float32)
    codes = np.rint(x / scales)
    np.clip(codes, -PER_PIXEL_STEPS, PER_PIXEL_STEPS, out=codes)
    valid = np.asarray(valid, bool)
    codes[:, ~valid] = 0
    scales[~valid] = np.nan
    return codes.astype(np.int8), scales


def per_pixel_values(codes: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(..., bands, rows, cols)`` and their scales ``(..., rows, cols)`` -> ``(values
    float32, NaN where no data; valid (..., rows, cols))``: code * scale (float32), valid where
    the scale is finite and > 0."""
    scales = np.asarray(scales, np.float32)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(scales) & (scales > 0)
    s = np.where(valid, scales, np.float32(np.nan))[..., None, :, :]
    return codes.astype(np.float32) * s, valid


def per_pixel_object(scales: str = "scales") -> dict:
    """The quantisation object (as :func:`stac_object`'s) of per-pixel scales in array ``scales``."""
    return {"method": f"per pixel: value = code * scale, scale = the pixel's max |value| / {PER_PIXEL_STEPS} "
                      f"(array {scales!r} beside the codes; NaN: no data)",
            "original_dtype": "float32", "quantized_dtype": "int8", "scale": scales}


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
