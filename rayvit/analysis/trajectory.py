"""``trajectory``: a time stack (:mod:`.stack`) -> per pixel, each date's cosine distance to
the first date's feature vector.

Band ``t`` is ``1 - cos(f_t, f_0)`` (0 for the first date): how far each pixel has moved from
where it started, date by date, in the model's feature space. A pixel is valid where every
date is; computed in float64, written as float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .source import BlockSource
from .stage import AnalysisResult, Product, Stage, run


@dataclass
class FirstDateDistance:
    """The fitted 'model': the stack's dates and features per date (nothing is learnt)."""

    times: tuple[str, ...]
    features: int

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x (n, dates x features)`` -> ``(n, dates)``: cosine distance of each date to the first."""
        f = x.reshape(len(x), len(self.times), self.features).astype(np.float64)
        norms = np.linalg.norm(f, axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.einsum("ntd,nd->nt", f, f[:, 0]) / (norms * norms[:, :1])
        return 1.0 - cos


class Trajectory(Stage):
    """Every pixel of a time stack -> its distance to the first date, per date: ``trajectory``."""

    name, product = "trajectory", "trajectory"

    def fit(self, source: BlockSource, pixels) -> "Trajectory":
        times = getattr(source.mosaic, "times", ())
        if not times or getattr(source.mosaic, "time", None) is not None:
            raise InputError(f"{source.path!r} is not a time stack: trajectory reads a (time, band, y, x) Zarr "
                             "product made by `rayvit stack` (not one of its dates).")
        if source.count % len(times):
            raise InputError("trajectory uses every band of every date: drop --bands.")
        self.model_ = FirstDateDistance(tuple(times), source.count // len(times))
        return self

    def products(self) -> list[Product]:
        t = self.model_.times
        return [Product("trajectory", len(t), "float32", np.nan, [f"distance_{t[0]}_to_{d}" for d in t])]

    def metrics(self, source, pixels, tally) -> dict:
        return {"dates": list(self.model_.times), "features": self.model_.features}


def trajectory(input: str, output: str, block_size: int = 128, overwrite: bool = False, address: str | None = None,
               progress: bool = True, dry_run: bool = False,
               format: str = "gtiff") -> AnalysisResult:
    """Each date's cosine distance to the first date, per pixel of the time stack ``input``
    (``OUT/features.zarr`` of ``rayvit stack``); writes ``trajectory.tif`` (a band per date;
    ``trajectory.zarr`` with ``format="zarr"``)."""
    return run(Trajectory(), BlockSource.open(input), output, None, block_size, overwrite, address, progress,
               dry_run, format)


def arguments(p) -> None:
    """``rayvit trajectory``'s options (:mod:`rayvit.stages`)."""
    from ..options import add_format_option, add_ray_options

    p.description = ("Per pixel of a time stack (rayvit stack), each date's cosine distance to the first "
                     "date's feature vector: trajectory.tif, one band per date (the first is 0).")
    p.add_argument("input", help="a time stack: OUT/features.zarr of rayvit stack")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--block-size", type=int, default=128, help="pixels per block side (default: 128: every "
                                                               "date's features of a block are read at once, "
                                                               "128 x 128 x 3 dates x 768 float32 = 150 MB)")
    add_format_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace another run's output")
    p.add_argument("--dry-run", action="store_true", help="print the work and the outputs; write nothing")
    add_ray_options(p)
