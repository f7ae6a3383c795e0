"""``reduce``: multi-band raster -> n components (exact distributed PCA, or any estimator)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError
from ..io.writer import DTYPES
from . import estimators
from .source import BlockSource, Pixels
from .stage import AnalysisResult, Product, Stage, run
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


def fit_reducer(estimator, source: BlockSource, pixels: Pixels, standardize: bool, sample_size: int,
                seed: int) -> Reducer:
    scaler = Standardizer(standardize).fit_moments(pixels.n, pixels.total, pixels.gram)
    if isinstance(estimator, DistributedPCA):
        estimator.standardize = standardize
        pca = estimator.fit_moments(pixels.n, pixels.total, pixels.gram)
        return Reducer(pca.scaler_, pca.project, pca.n_components, pca, "exact, all valid pixels")
    z = scaler.transform(source.sample(pixels, sample_size, seed))
    function, how = estimators.fitted_function(estimator, z, "transform")
    n_outputs = np.asarray(function(z[:1])).reshape(1, -1).shape[1]
    return Reducer(scaler, function, n_outputs, estimator, f"fitted on {len(z)} sampled pixels, applied by {how}")


class Reduce(Stage):
    """Every pixel -> ``n_components`` bands: ``reduced``."""

    name, product, statistics, saves_model = "reduce", "reduced", True, True

    def __init__(self, method: str = "PCA", n_components: int | None = None, params=None, standardize: bool = True,
                 sample_size: int = 100_000, seed: int = 0, dtype: str = "float32", fitted: bool = False):
        if dtype not in DTYPES:
            raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
        cls = EXACT.get(method) or estimators.resolve("reduce", method)
        self.method, self.n_components, self.params, self.standardize = method, n_components, params, standardize
        self.sample_size, self.seed, self.dtype = sample_size, seed, dtype
        self.estimator = None if fitted else estimators.build(cls, params, defaults={"n_components": 3},
                                                              n_components=n_components)

    def config(self) -> dict:
        return {"method": self.method, "params": estimators.jsonable(self.params), "n_components": self.n_components,
                "standardize": self.standardize, "sample": self.sample_size, "seed": self.seed, "dtype": self.dtype}

    def fit(self, source, pixels: Pixels) -> "Reduce":
        wanted = getattr(self.estimator, "n_components", None)
        if isinstance(wanted, int) and not 1 <= wanted <= source.count:
            raise InputError(f"--n-components {wanted} must be between 1 and the band count of "
                             f"{source.path!r} ({source.count}).")
        self.model_ = fit_reducer(self.estimator, source, pixels, self.standardize, self.sample_size, self.seed)
        return self

    def products(self) -> list[Product]:
        m = self.model_
        return [Product("reduced", m.n_outputs, self.dtype, np.nan, [f"component_{i + 1}" for i in range(m.n_outputs)],
                        quantized=self.dtype in ("int8", "uint8"))]

    def metrics(self, source, pixels, tally) -> dict:
        m = self.model_
        out = {"method": type(m.estimator).__name__, "fit": m.how, "n_pixels": pixels.n}
        if hasattr(m.estimator, "metrics"):
            return {**out, **m.estimator.metrics()}
        ratio = getattr(m.estimator, "explained_variance_ratio_", None)
        if ratio is not None:
            out["explained_variance_ratio"] = np.asarray(ratio).tolist()
            out["cumulative_explained_variance_ratio"] = np.cumsum(ratio).tolist()
        return out


def reduce(input: str, output: str, method: str = "PCA", n_components: int | None = None,
           params: str | dict | None = None, standardize: bool = True, sample_size: int = 100_000,
           seed: int = 0, bands: Sequence[int] | None = None, block_size: int = 512, model: str | None = None,
           overwrite: bool = False, address: str | None = None, progress: bool = True,
           dry_run: bool = False, dtype: str = "float32", format: str = "gtiff") -> AnalysisResult:
    """Reduce every pixel of ``input`` to ``n_components`` bands (default 3); writes ``reduced.tif`` etc.

    PCA is exact: every valid pixel enters the covariance (moments summed in Ray tasks).
    Any other ``sklearn.decomposition`` / ``sklearn.manifold`` class or ``UMAP`` is fitted on
    a seeded uniform sample of ``sample_size`` valid pixels and applied to every block.
    ``dtype``: float32, float16, or int8/uint8 with a scale and offset per band.
    """
    stage = Reduce(method, n_components, params, standardize, sample_size, seed, dtype, fitted=bool(model))
    return run(stage, BlockSource.open(input, bands), output, model, block_size, overwrite, address, progress,
               dry_run, format)


def arguments(p) -> None:
    """``rayvit reduce``'s options (:mod:`rayvit.stages`)."""
    from ..options import analysis_common, estimator_options

    p.description = ("Reduce every pixel of a multi-band raster to --n-components bands. "
                     "PCA is exact: every valid pixel enters the covariance, summed over "
                     "blocks in Ray tasks. Other methods (sklearn.decomposition, "
                     "sklearn.manifold, UMAP) are fitted on a seeded sample and applied to "
                     "every block with transform, or by the nearest sampled pixel when they "
                     "have none (TSNE, MDS). Writes reduced.tif, model.joblib, metrics.json "
                     "and quicklook.png.")
    analysis_common(p)
    estimator_options(p, "reduce", "PCA", "exact PCA over all valid pixels")
    p.add_argument("--n-components", type=int, help="output bands (default: 3); sets the estimator's "
                                                    "n_components")
    p.add_argument("--dtype", choices=("float32", "float16", "int8", "uint8"), default="float32",
                   help="type of reduced.tif (default: float32); int8/uint8 carry a scale and offset per band")
