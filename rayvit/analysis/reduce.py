"""``reduce``: multi-band raster -> n components (exact distributed PCA, or any estimator)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError
from ..io.writer import DTYPES
from . import estimators
from .apply import AnalysisResult, Pixels, Product, run, sample
from .pca import DistributedPCA, Standardizer

EXACT = {"PCA": DistributedPCA}


@dataclass
class Reducer:
    """A fitted reduction: what ``model.joblib`` holds and what every block applies."""

    scaler: Standardizer
    transform: Callable[[np.ndarray], np.ndarray]
    n_outputs: int
    estimator: Any
    how: str

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.transform(self.scaler.transform(x)), dtype=np.float64).reshape(len(x), -1)


def fit_reducer(estimator, mosaic, pixels: Pixels, standardize: bool, sample_size: int, seed: int) -> Reducer:
    scaler = Standardizer(standardize).fit_moments(pixels.n, pixels.total, pixels.gram)
    if isinstance(estimator, DistributedPCA):
        estimator.standardize = standardize
        pca = estimator.fit_moments(pixels.n, pixels.total, pixels.gram)
        return Reducer(pca.scaler_, pca.project, pca.n_components, pca, "exact, all valid pixels")
    z = scaler.transform(sample(mosaic, pixels, sample_size, seed))
    function, how = estimators.fitted_function(estimator, z, "transform")
    n_outputs = np.asarray(function(z[:1])).reshape(1, -1).shape[1]
    return Reducer(scaler, function, n_outputs, estimator, f"fitted on {len(z)} sampled pixels, applied by {how}")


def reduce(input: str, output: str, method: str = "PCA", n_components: int | None = None,
           params: str | dict | None = None, standardize: bool = True, sample_size: int = 100_000,
           seed: int = 0, bands: Sequence[int] | None = None, block_size: int = 512, model: str | None = None,
           overwrite: bool = False, address: str | None = None, progress: bool = True,
           dry_run: bool = False, dtype: str = "float32") -> AnalysisResult:
    """Reduce every pixel of ``input`` to ``n_components`` bands (default 3); writes ``reduced.tif`` etc.

    PCA is exact: every valid pixel enters the covariance (moments summed in Ray tasks).
    Any other ``sklearn.decomposition`` / ``sklearn.manifold`` class or ``UMAP`` is fitted on
    a seeded uniform sample of ``sample_size`` valid pixels and applied to every block.
    ``dtype``: float32, float16, or int8/uint8 with a scale and offset per band.
    """
    if dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    cls = EXACT.get(method) or estimators.resolve("reduce", method)
    estimator = None if model else estimators.build(cls, params, defaults={"n_components": 3},
                                                    n_components=n_components)

    def fit(mosaic, pixels: Pixels):
        wanted = getattr(estimator, "n_components", None)
        if isinstance(wanted, int) and not 1 <= wanted <= mosaic.count:
            raise InputError(f"--n-components {wanted} must be between 1 and the band count of "
                             f"{input!r} ({mosaic.count}).")
        return fit_reducer(estimator, mosaic, pixels, standardize, sample_size, seed)

    def metrics(model, mosaic, pixels, tally):
        out = {"method": type(model.estimator).__name__, "fit": model.how, "n_pixels": pixels.n}
        if hasattr(model.estimator, "metrics"):
            return {**out, **model.estimator.metrics()}
        ratio = getattr(model.estimator, "explained_variance_ratio_", None)
        if ratio is not None:
            out["explained_variance_ratio"] = np.asarray(ratio).tolist()
            out["cumulative_explained_variance_ratio"] = np.cumsum(ratio).tolist()
        return out

    config = {"method": method, "params": estimators.jsonable(params), "n_components": n_components,
              "standardize": standardize, "sample": sample_size, "seed": seed, "dtype": dtype}
    def products(m):
        return [Product("reduced", m.n_outputs, dtype, np.nan,
                        [f"component_{i + 1}" for i in range(m.n_outputs)], quantized=dtype in ("int8", "uint8"))]

    return run("reduce", input, output, config, fit, model, products, metrics, bands, block_size,
               overwrite, address, progress, dry_run=dry_run)
