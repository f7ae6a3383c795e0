"""``cluster``: multi-band raster -> cluster labels (distributed KMeans, or any sklearn.cluster class)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..console import Progress, progress_on
from ..errors import InputError
from ..report.quicklook import palette
from ..io import sampling
from . import estimators
from .source import BlockSource, Pixels
from .stage import AnalysisResult, Product, Stage, run
from .kmeans import DistributedKMeans, partial_sums
from .pca import Standardizer

EXACT = {"KMeans": DistributedKMeans}


def label_dtype(n_labels: int) -> tuple[str, int]:
    """Smallest unsigned type holding labels 0..n-1, a noise value (its maximum - 1) and a
    nodata value (its maximum)."""
    for dtype in ("uint8", "uint16", "uint32"):
        top = int(np.iinfo(dtype).max)
        if n_labels <= top - 1:
            return dtype, top
    raise InputError(f"{n_labels} clusters is too many.")


@dataclass
class Clusterer:
    """A fitted clustering: labels 0..n_labels-1; noise (label -1, e.g. HDBSCAN) -> ``noise``."""

    scaler: Standardizer
    predict: Callable[[np.ndarray], np.ndarray]
    n_labels: int
    estimator: Any
    how: str
    n_outputs: int = 1

    @property
    def noise(self) -> int:
        return label_dtype(self.n_labels)[1] - 1

    def apply(self, x: np.ndarray) -> np.ndarray:
        labels = np.asarray(self.predict(self.scaler.transform(x)))
        return np.where(labels < 0, self.noise, labels)[:, None]


def _step(mosaic, window, index, scaler, centers):
    return partial_sums(scaler.transform(sampling.valid_pixels(mosaic, window)), centers)


def fit_clusterer(estimator, source: BlockSource, pixels: Pixels, standardize: bool, sample_size: int,
                  seed: int) -> Clusterer:
    scaler = Standardizer(standardize).fit_moments(pixels.n, pixels.total, pixels.gram)
    drawn = scaler.transform(source.sample(pixels, sample_size, seed))
    if isinstance(estimator, DistributedKMeans):
        def step(centers):
            parts = source.map(_step, pixels.windows, scaler, centers)
            bar.update(1)
            return (sum(p[0] for p in parts), sum(p[1] for p in parts), float(sum(p[2] for p in parts)))

        # scikit-learn's tolerance: tol x the mean band variance of the data being clustered
        variance = float(np.mean(pixels.band_variance / scaler.scale_ ** 2))
        # at most max_iter steps and a last one for the inertia; convergence may stop it early
        with Progress(estimator.max_iter + 1, "kmeans", "pass", enabled=progress_on()) as bar:
            km = estimator.fit_steps(drawn, step, variance)
        return Clusterer(scaler, km.predict, km.cluster_centers_.shape[0], km,
                         "exact Lloyd iterations over all valid pixels")
    function, how = estimators.fitted_function(estimator, drawn, "predict")
    labels = np.asarray(function(drawn))
    n_labels = max(int(labels.max()) + 1, len(getattr(estimator, "cluster_centers_", ())), 1)
    return Clusterer(scaler, function, n_labels, estimator,
                     f"fitted on {len(drawn)} sampled pixels, applied by {how}")


class Cluster(Stage):
    """Every pixel -> a cluster label: ``clusters`` (with a colour table)."""

    name, product, statistics, saves_model = "cluster", "clusters", True, True

    def __init__(self, method: str = "KMeans", n_clusters: int | None = None, params=None, standardize: bool = True,
                 sample_size: int = 100_000, seed: int = 0, fitted: bool = False):
        cls = EXACT.get(method) or estimators.resolve("cluster", method)
        self.method, self.n_clusters, self.params, self.standardize = method, n_clusters, params, standardize
        self.sample_size, self.seed, self.estimator = sample_size, seed, None
        if not fitted:
            self.estimator = estimators.build(cls, params, n_clusters=n_clusters)
            if isinstance(self.estimator, DistributedKMeans) and "random_state" not in estimators.parse_params(params):
                self.estimator.random_state = seed
            k = getattr(self.estimator, "n_clusters", 1)
            if k is not None and k < 1:
                raise InputError(f"--n-clusters must be >= 1, got {k}.")

    def config(self) -> dict:
        return {"method": self.method, "params": estimators.jsonable(self.params), "n_clusters": self.n_clusters,
                "standardize": self.standardize, "sample": self.sample_size, "seed": self.seed}

    def fit(self, source, pixels: Pixels) -> "Cluster":
        self.model_ = fit_clusterer(self.estimator, source, pixels, self.standardize, self.sample_size, self.seed)
        return self

    def products(self) -> list[Product]:
        n = self.model_.n_labels
        return [Product("clusters", 1, *label_dtype(n), ["cluster"], colormap=palette(n))]

    def metrics(self, source, pixels, tally) -> dict:
        from sklearn.metrics import silhouette_score

        model = self.model_
        sizes = np.zeros(model.n_labels, dtype=np.int64) if tally is None else tally
        out = {"method": type(model.estimator).__name__, "fit": model.how, "n_clusters": model.n_labels,
               "n_iter": getattr(model.estimator, "n_iter_", None),
               "inertia": getattr(model.estimator, "inertia_", None),
               "cluster_sizes": [int(c) for c in sizes[:model.n_labels]],
               "noise_value": model.noise, "noise_pixels": int(sizes[model.noise]) if len(sizes) > model.noise else 0,
               "n_pixels": pixels.n}
        probe = source.sample(pixels, min(5000, pixels.n), self.seed + 1)
        labels = model.apply(probe)[:, 0]
        keep = labels != model.noise
        if 1 < len(np.unique(labels[keep])) < keep.sum():
            out["silhouette_sample"] = float(silhouette_score(model.scaler.transform(probe[keep]), labels[keep]))
        return out


def cluster(input: str, output: str, method: str = "KMeans", n_clusters: int | None = None,
            params: str | dict | None = None, standardize: bool = True, sample_size: int = 100_000,
            seed: int = 0, bands: Sequence[int] | None = None, block_size: int = 512,
            model: str | None = None, overwrite: bool = False, address: str | None = None,
            progress: bool = True, dry_run: bool = False,
            format: str = "gtiff") -> AnalysisResult:
    """Cluster every pixel of ``input``; writes ``clusters.tif`` (colour table), model, metrics.

    KMeans (default, 8 clusters): k-means++ on a seeded uniform sample of ``sample_size``
    valid pixels, then Lloyd iterations over *all* valid pixels, each E-step summed over
    blocks in Ray tasks (``params``: ``max_iter``, ``tol``, ``init``). Any other
    ``sklearn.cluster`` class is fitted on the sample and applied to every block with
    ``predict``, or, lacking it (HDBSCAN, DBSCAN, ...), with the nearest sampled pixel's label.
    """
    stage = Cluster(method, n_clusters, params, standardize, sample_size, seed, fitted=bool(model))
    return run(stage, BlockSource.open(input, bands), output, model, block_size, overwrite, address, progress,
               dry_run, format)


def arguments(p) -> None:
    """``rayvit cluster``'s options (:mod:`rayvit.stages`)."""
    from ..options import analysis_common, estimator_options

    p.description = ("Cluster every pixel of a multi-band raster. KMeans: k-means++ on a "
                     "seeded uniform sample, then Lloyd iterations over all valid pixels "
                     "(summed over blocks in Ray tasks; --params max_iter, tol, init). Other "
                     "sklearn.cluster classes are fitted on the sample and applied with "
                     "predict, or by the nearest sampled pixel's label (HDBSCAN, DBSCAN, ...). "
                     "Writes clusters.tif (smallest unsigned type; nodata = its maximum, "
                     "noise = maximum - 1; GDAL colour table), model.joblib, metrics.json "
                     "and quicklook.png.")
    analysis_common(p)
    estimator_options(p, "cluster", "KMeans", "distributed KMeans over all valid pixels")
    p.add_argument("--n-clusters", type=int, help="sets the estimator's n_clusters (KMeans default: 8)")
