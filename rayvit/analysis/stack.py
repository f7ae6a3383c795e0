"""``stack``: Zarr feature products of several dates -> one time stack ``(time, band, y, x)``.

The dates' products must share everything but their pixels (grid, features, dtype, block
size: what ``rayvit encode --stac ... --by-date --format zarr`` gives, or encodes of several
files with the same ``--crs/--res/--extent``). Their shards become the stack's as they are:
hard links, nothing decoded or copied (a shard of ``(band, y, x)`` is byte for byte one of
``(1, band, y, x)``), so a stack of any size is made in seconds. The stack is built beside
the output and renamed into place; ``features.json`` (its sidecar) is written last.
Every analysis stage reads one date of it as ``OUT/features.zarr@YYYY-MM-DD`` (``change``
between two dates included); :mod:`.trajectory` reads all of it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError, OutputError
from ..io import chunked, storage
from ..version import __version__


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


@dataclass
class StackResult:
    output: str             # the stack's store
    dates: list
    shards: int
    elapsed_s: float

    def summary(self) -> str:
        return (f"stack: {len(self.dates)} dates ({self.dates[0]} .. {self.dates[-1]}), {self.shards} shards "
                f"linked in {self.elapsed_s:.1f} s -> {self.output}")


def stack(inputs: Sequence[str], output: str, dates: Sequence[str] | None = None, overwrite: bool = False,
          progress: bool = True) -> StackResult:
    """Stack the Zarr products ``inputs`` (one per date; dates from ``dates`` or from each
    input's directory name) into ``output/features.zarr`` (the result's ``output``)."""
    import zarr

    t0 = time.monotonic()
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
    g = [float(v) for v in ref["GeoTransform"].split()]
    d, height, width = first.shape
    chunked.create(staging, ref["crs_wkt"], (g[1], g[2], g[0], g[4], g[5], g[3]), width, height,
                   [str(b) for b in arrays[0]["band"][:]], str(first.dtype), first.shards[1],
                   dict(first.attrs) | {"long_name": "ViT features, time stack"}, times=days)
    shards = sum(chunked.link_shards(s, staging, t) for t, s in enumerate(stores))
    chunked.consolidate(staging)
    os.rename(staging, final)
    record = {"rayvit_version": __version__, "stage": "stack", "products": stores, "dates": days,
              "shards": shards, "output": "features.zarr", "timings": {"total_s": time.monotonic() - t0}}
    storage.atomic_write(sidecar, json.dumps(record, indent=1))      # last: the stack is complete
    return StackResult(final, days, shards, time.monotonic() - t0)


def arguments(p) -> None:
    """``rayvit stack``'s options (:mod:`rayvit.stages`)."""
    from ..options import names

    p.description = ("Stack Zarr feature products of several dates (one grid) into one (time, band, y, x) "
                     "Zarr store, linking their shards (nothing is copied). Its dates read as "
                     "OUT/features.zarr@YYYY-MM-DD in every analysis stage; `rayvit trajectory` reads them all.")
    p.add_argument("inputs", nargs="+", help="Zarr products (directories holding features.zarr, or stores), "
                                             "one per date, in date order")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--dates", type=names, help="YYYY-MM-DD per input (default: each input's directory name, "
                                               "as `encode --by-date` names them)")
    p.add_argument("--overwrite", action="store_true", help="replace a product already in the output directory")
    p.add_argument("--quiet", action="store_true", help="print no progress")
