"""``rayvit.open``: a rayvit product, or another's embeddings raster, as a lazy xarray
DataArray with its CRS, for notebooks and dask.

Any product rayvit writes opens the same way: a single COG (``features.tif``), a block
product (its tile index ``features.gti.gpkg`` or ``features.vrt``, which GDAL reads as one
raster), a Zarr store (``features.zarr``, through ``xarray.open_zarr``), or the directory
holding any of them (its sidecar names the product). Values come back
as the floats they stand for: int8/uint8 products are dequantised per band (value = code x
scale + offset) and nodata becomes NaN, lazily, chunk by chunk; int8 Zarr stores (rayvit's,
TESSERA's) per pixel (code x scale), a time stack with its ``time`` dimension; ``alphaearth:PATH`` reads
AlphaEarth's int8 codes through their own formula (:func:`.quantize.alphaearth_values`), a
TESSERA tile (``tessera:PATH`` or its ``.npy``) through its scales (:mod:`.tessera`).
Needs the ``xarray`` extra (xarray, rioxarray, dask).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import InputError
from . import chunked, quantize, storage, tessera

CHUNK = 512     # pixels per chunk side; all bands in one chunk (a pixel's vector is read whole)


def product_raster(path: str) -> str:
    """The raster of a product directory (named by its sidecar's ``output``), else ``path``."""
    if not (storage.is_local(path) and os.path.isdir(path)) or chunked.is_zarr(path):
        return path
    for name in sorted(os.listdir(path)):
        if name.endswith(".json") and name not in ("run.json", "metrics.json"):
            try:
                with open(os.path.join(path, name)) as fh:
                    output = json.load(fh).get("output")
            except (OSError, ValueError, AttributeError):
                continue
            if output and os.path.exists(os.path.join(path, output)):
                return os.path.join(path, output)
    raise InputError(f"{path!r} holds no finished rayvit product (no sidecar naming its raster); "
                     "pass the raster itself, or finish the run (it resumes).")


def open_array(path: str | os.PathLike, dequantize: bool = True, chunks: int = CHUNK):
    """``path`` as an ``xarray.DataArray`` (band, y, x), dask-backed: nothing is read until it
    is computed. ``band`` holds the band names (``feature_0001``, ...), ``.rio.crs`` and
    ``.rio.transform()`` the georeference. ``dequantize=False`` keeps int8/uint8 codes (and
    nodata) as stored."""
    try:
        import rioxarray
        import xarray as xr
    except ImportError as exc:
        raise InputError("rayvit.open needs xarray, rioxarray, dask and zarr: pip install 'rayvit[xarray]'.") from exc

    path, alphaearth = quantize.alphaearth_path(str(path))
    raster = product_raster(path)
    path, is_tessera = tessera.tessera_path(raster)
    if is_tessera:
        return windowed(tessera.TesseraTile.open(path), chunks)
    if chunked.is_zarr(raster):         # sharded Zarr v3: xarray reads it (GDAL 3.10 cannot)
        return _zarr(raster, dequantize, chunks)
    try:
        da = rioxarray.open_rasterio(raster, chunks={"band": -1, "y": chunks, "x": chunks}, mask_and_scale=False,
                                     lock=False)
    except Exception as exc:
        raise InputError(f"cannot open {raster!r} as a raster ({exc}).") from exc
    names = da.attrs.pop("long_name", None)
    if isinstance(names, (tuple, list)) and len(names) == da.sizes["band"] and all(names):
        da = da.assign_coords(band=list(names))
    if not dequantize:
        return da
    nodata = da.attrs.pop("_FillValue", None)
    for key in ("scale_factor", "add_offset"):       # set only when every band shares one
        da.attrs.pop(key, None)
    if alphaearth or (da.dtype == np.int8 and tuple(map(str, da.band.values)) == quantize.ALPHAEARTH_BANDS):
        valid = ~(da == quantize.ALPHAEARTH_NODATA).any("band")
        out = xr.apply_ufunc(quantize.alphaearth_values, da, dask="parallelized", output_dtypes=[np.float32])
        return out.where(valid).rio.write_crs(da.rio.crs)
    import rasterio

    with rasterio.open(raster) as ds:               # per band (rioxarray's attributes hold a common one)
        scales, offsets = np.array(ds.scales, np.float64), np.array(ds.offsets, np.float64)
    out = da
    if (scales != 1).any() or (offsets != 0).any():
        band = {"dims": "band", "coords": {"band": da.band}}
        out = (da.astype(np.float64) * xr.DataArray(scales, **band) + xr.DataArray(offsets, **band)).astype(np.float32)
    if nodata is not None and not np.isnan(nodata):
        out = out.where(da != nodata)               # NaN (a float product's nodata is NaN already)
    out.attrs.update(da.attrs)
    return out.rio.write_crs(da.rio.crs)


def _zarr(path: str, dequantize: bool, chunks: int):
    """A Zarr store's variable (rayvit's features or analysis product, or another's), all its
    dimensions kept (a time stack's too), with its CRS; per-pixel scaled int8 (rayvit's int8
    stores, TESSERA's) dequantised as code x scale, NaN where the scale says no data; integer
    products with NaN for their ``_FillValue`` (xarray's CF decoding)."""
    import xarray as xr

    raster = chunked.ZarrRaster.open(path)
    store, group = chunked.store_root(raster.path)
    ds = xr.open_zarr(chunked.location(store, raster.options), group=group or None,
                      chunks={"band": -1, "y": chunks, "x": chunks}, decode_coords="all", mask_and_scale=dequantize)
    da = ds[raster.array]
    if raster.scales:
        scales = ds[raster.scales]
        if not dequantize:
            da = da.assign_coords({raster.scales: scales})
        else:       # quantize.per_pixel_values, chunk by chunk: float32 code x scale, NaN if not > 0
            da = (da.astype(np.float32) * scales.where(np.isfinite(scales) & (scales > 0))).rename(raster.array)
    elif dequantize:
        da = da.astype(np.float32)
    return da.rio.write_crs(raster.grid.crs).rio.write_transform(raster.grid.affine)


class _Windows:
    """A raster with ``read(row, col, rows, cols)`` as the array dask slices: (band, y, x)
    float32, NaN where not valid."""

    def __init__(self, raster):
        self.raster, self.dtype, self.ndim = raster, np.dtype(np.float32), 3
        self.shape = (raster.count, raster.grid.height, raster.grid.width)

    def __getitem__(self, key):
        b, y, x = (k.indices(n) if isinstance(k, slice) else (k, k + 1, 1) for k, n in zip(key, self.shape))
        data, valid = self.raster.read(y[0], x[0], y[1] - y[0], x[1] - x[0])
        data[:, ~valid] = np.nan
        return data[b[0]:b[1]:b[2]][:, ::y[2], ::x[2]]


def windowed(raster, chunks: int = CHUNK):
    """A raster read window by window (``grid``, ``count``, ``bands``, ``read``) as a lazy
    DataArray with coordinates and CRS."""
    import dask.array
    import xarray as xr

    g = raster.grid
    a = g.transform
    data = dask.array.from_array(_Windows(raster), chunks=(-1, chunks, chunks), asarray=False)
    da = xr.DataArray(data, dims=("band", "y", "x"), coords={
        "band": list(raster.bands), "y": a[5] + (np.arange(g.height) + 0.5) * a[4],
        "x": a[2] + (np.arange(g.width) + 0.5) * a[0]})
    return da.rio.write_crs(g.crs).rio.write_transform(g.affine)
