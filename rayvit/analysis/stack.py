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

import time
from dataclasses import dataclass
from typing import Sequence

from ..io import chunked


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
    input's directory name) into ``output/features.zarr`` (the result's ``output``):
    :func:`rayvit.io.chunked.stack_products`."""
    t0 = time.monotonic()
    final, days, shards = chunked.stack_products(inputs, output, dates, overwrite)
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
