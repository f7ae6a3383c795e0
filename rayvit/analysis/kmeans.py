"""KMeans over every valid pixel: k-means++ on a seeded sample, then distributed Lloyd steps.

Each Lloyd step is additive over blocks: Ray tasks return per-centroid sums, counts and
inertia for their windows; the driver adds them and moves the centroids. It stops when
the total squared centroid shift is at most ``tol`` times the mean band variance, or
after ``max_iter`` steps, as scikit-learn's Lloyd KMeans does; with the same initial
centroids it gives the same labels.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import kmeans_plusplus

from ..errors import InputError


def nearest(x: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of, and squared distance to, the nearest centre of each row of ``x``."""
    d2 = (x * x).sum(axis=1)[:, None] - 2 * x @ centers.T + (centers * centers).sum(axis=1)[None]
    labels = np.argmin(d2, axis=1)
    return labels, np.maximum(d2[np.arange(len(x)), labels], 0.0)


def partial_sums(x: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One Lloyd E-step on a block: per-centre sums and counts, and the block's inertia."""
    k, d = centers.shape
    sums, counts = np.zeros((k, d)), np.zeros(k, dtype=np.int64)
    if len(x):
        labels, dist = nearest(x, centers)
        np.add.at(sums, labels, x)
        counts = np.bincount(labels, minlength=k)
        return sums, counts, float(dist.sum())
    return sums, counts, 0.0


class DistributedKMeans:
    """Lloyd KMeans whose E-steps run anywhere (``step``), scikit-learn-like attributes."""

    def __init__(self, n_clusters: int = 8, max_iter: int = 300, tol: float = 1e-4,
                 random_state: int = 0, init: np.ndarray | None = None):
        self.n_clusters, self.max_iter, self.tol = n_clusters, max_iter, tol
        self.random_state, self.init = random_state, init

    def initial_centers(self, sample: np.ndarray) -> np.ndarray:
        if self.init is not None:
            return np.asarray(self.init, dtype=np.float64)
        if len(sample) < self.n_clusters:
            raise InputError(f"--n-clusters {self.n_clusters} is more than the {len(sample)} valid "
                             "pixels sampled; use fewer clusters.")
        centers, _ = kmeans_plusplus(sample, self.n_clusters, random_state=self.random_state)
        return centers

    def fit_steps(self, sample: np.ndarray, step, mean_variance: float) -> "DistributedKMeans":
        """Fit with ``step(centers) -> (sums, counts, inertia)`` summed over all pixels."""
        if self.max_iter < 1:
            raise InputError(f"--max-iter must be >= 1, got {self.max_iter}.")
        centers = self.initial_centers(sample)
        tol = self.tol * mean_variance
        for iteration in range(1, self.max_iter + 1):
            sums, counts, _ = step(centers)
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
            shift = float(((new - centers) ** 2).sum())
            centers = new
            if shift <= tol:
                break
        self.n_iter_ = iteration
        self.cluster_centers_ = centers
        _, counts, inertia = step(centers)
        self.inertia_, self.counts_ = inertia, counts
        return self

    def fit(self, x: np.ndarray) -> "DistributedKMeans":
        x = np.asarray(x, dtype=np.float64)
        return self.fit_steps(x, lambda c: partial_sums(x, c), float(x.var(axis=0).mean()))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return nearest(np.asarray(x, dtype=np.float64), self.cluster_centers_)[0]
