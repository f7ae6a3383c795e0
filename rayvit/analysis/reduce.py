"""``reduce``: multi-band raster -> n components (exact distributed PCA)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from .apply import AnalysisResult, Pixels, run
from .pca import DistributedPCA

REDUCE_METHODS = ("PCA",)


@dataclass
class Reducer:
    """A fitted reduction: what ``model.joblib`` holds and what every block applies."""

    estimator: DistributedPCA

    @property
    def n_outputs(self) -> int:
        return self.estimator.n_components

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.transform(x)


def reduce(input: str, output: str, method: str = "PCA", n_components: int = 3, standardize: bool = True,
           bands: Sequence[int] | None = None, block_size: int = 512, model: str | None = None,
           overwrite: bool = False, address: str | None = None, progress: bool = True) -> AnalysisResult:
    """Reduce every pixel of ``input`` to ``n_components`` bands; writes ``reduced.tif`` etc.

    PCA is exact: every valid pixel enters the covariance (moments summed in Ray tasks).
    """
    if method not in REDUCE_METHODS:
        raise InputError(f"unknown --method {method!r} for reduce; valid: {', '.join(REDUCE_METHODS)}.")

    def fit(mosaic, pixels: Pixels):
        if not 1 <= n_components <= mosaic.count:
            raise InputError(f"--n-components {n_components} must be between 1 and the band count of "
                             f"{input!r} ({mosaic.count}).")
        return Reducer(DistributedPCA(n_components, standardize).fit_moments(pixels.n, pixels.total, pixels.gram))

    def metrics(model, mosaic, pixels):
        return {"method": method, **model.estimator.metrics()}

    config = {"method": method, "n_components": n_components, "standardize": standardize}
    return run("reduce", input, output, config, fit, model, "float32", np.nan,
               lambda m: [f"component_{i + 1}" for i in range(m.n_outputs)], metrics, bands,
               block_size, overwrite, address, progress)
