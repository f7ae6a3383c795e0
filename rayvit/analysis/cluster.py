"""``cluster``: multi-band raster -> cluster labels (distributed Lloyd KMeans)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..report import palette
from .apply import AnalysisResult, Pixels, run, run_windows, sample
from .kmeans import DistributedKMeans, partial_sums
from .pca import Standardizer
from . import sampling

CLUSTER_METHODS = ("KMeans",)


def label_dtype(n_labels: int) -> tuple[str, int]:
    """Smallest unsigned type holding labels 0..n-1 plus a nodata value (its maximum)."""
    for dtype in ("uint8", "uint16", "uint32"):
        top = int(np.iinfo(dtype).max)
        if n_labels <= top:
            return dtype, top
    raise InputError(f"{n_labels} clusters is too many.")


@dataclass
class Clusterer:
    scaler: Standardizer
    estimator: DistributedKMeans
    n_outputs: int = 1

    @property
    def n_labels(self) -> int:
        return self.estimator.n_clusters

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.predict(self.scaler.transform(x))[:, None]


def _step(mosaic, window, index, scaler, centers):
    return partial_sums(scaler.transform(sampling.valid_pixels(mosaic, window)), centers)


def cluster(input: str, output: str, method: str = "KMeans", n_clusters: int = 8, standardize: bool = True,
            sample_size: int = 100_000, seed: int = 0, max_iter: int = 300, tol: float = 1e-4,
            init: np.ndarray | None = None, bands: Sequence[int] | None = None, block_size: int = 512,
            model: str | None = None, overwrite: bool = False, address: str | None = None,
            progress: bool = True) -> AnalysisResult:
    """Cluster every pixel of ``input``; writes ``clusters.tif`` (colour table), model, metrics.

    KMeans: k-means++ on a seeded uniform sample of ``sample_size`` valid pixels, then
    Lloyd iterations over *all* valid pixels, each E-step summed over blocks in Ray tasks.
    """
    if method not in CLUSTER_METHODS:
        raise InputError(f"unknown --method {method!r} for cluster; valid: {', '.join(CLUSTER_METHODS)}.")
    if n_clusters < 1:
        raise InputError(f"--n-clusters must be >= 1, got {n_clusters}.")

    def fit(mosaic, pixels: Pixels):
        scaler = Standardizer(standardize).fit_moments(pixels.n, pixels.total, pixels.gram)
        drawn = scaler.transform(sample(mosaic, pixels, sample_size, seed))
        km = DistributedKMeans(n_clusters, max_iter, tol, seed, init)

        def step(centers):
            parts = run_windows(_step, mosaic, pixels.windows, scaler, centers)
            return (sum(p[0] for p in parts), sum(p[1] for p in parts), float(sum(p[2] for p in parts)))

        # scikit-learn's tolerance: tol x the mean band variance of the data being clustered
        variance = float(np.mean(pixels.band_variance / scaler.scale_ ** 2))
        return Clusterer(scaler, km.fit_steps(drawn, step, variance))

    def metrics(model, mosaic, pixels):
        from sklearn.metrics import silhouette_score
        km = model.estimator
        out = {"method": method, "n_clusters": km.n_clusters, "n_iter": getattr(km, "n_iter_", None),
               "inertia": getattr(km, "inertia_", None),
               "cluster_sizes": [int(c) for c in getattr(km, "counts_", [])], "n_pixels": pixels.n}
        probe = model.scaler.transform(sample(mosaic, pixels, min(5000, pixels.n), seed + 1))
        labels = km.predict(probe)
        if 1 < len(np.unique(labels)) < len(probe):
            out["silhouette_sample"] = float(silhouette_score(probe, labels))
        return out

    n_labels = init.shape[0] if init is not None else n_clusters
    dtype, nodata = label_dtype(n_labels)
    config = {"method": method, "n_clusters": n_clusters, "standardize": standardize, "sample": sample_size,
              "seed": seed, "max_iter": max_iter, "tol": tol,
              "init": None if init is None else np.asarray(init).tolist()}
    return run("cluster", input, output, config, fit, model, dtype, nodata, lambda m: ["cluster"],
               metrics, bands, block_size, overwrite, address, progress,
               colormap=lambda m: palette(m.n_labels))
