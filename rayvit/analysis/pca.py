"""Exact PCA of every valid pixel, from moments summed over blocks (no pixel matrix in memory).

``n``, the per-band sums and the Gram matrix ``X^T X`` are additive over blocks, so Ray
tasks compute them per group of windows and the driver adds them up and eigendecomposes
the ``d x d`` covariance: the same components (up to sign) and explained variance as
scikit-learn's PCA on the same pixels, at any raster size.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


class Standardizer:
    """Per-band centring, and scaling by the population std when ``enabled``
    (scikit-learn's StandardScaler), fitted from moments."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def fit_moments(self, n: int, total: np.ndarray, gram: np.ndarray) -> "Standardizer":
        self.mean_ = total / n
        var = np.maximum(np.diag(gram) / n - self.mean_ ** 2, 0.0)
        self.scale_ = np.where(var > 0, np.sqrt(var), 1.0) if self.enabled else np.ones_like(var)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) / self.scale_


class DistributedPCA:
    """PCA fitted from summed moments; ``fit(X)`` does the same on an in-memory array."""

    def __init__(self, n_components: int = 3, standardize: bool = True):
        self.n_components = n_components
        self.standardize = standardize

    def fit(self, x: np.ndarray) -> "DistributedPCA":
        x = np.asarray(x, dtype=np.float64)
        return self.fit_moments(len(x), x.sum(axis=0), x.T @ x)

    def fit_moments(self, n: int, total: np.ndarray, gram: np.ndarray) -> "DistributedPCA":
        d = len(total)
        if not 1 <= self.n_components <= d:
            raise InputError(f"--n-components {self.n_components} must be between 1 and the band "
                             f"count ({d}).")
        if n < 2:
            raise InputError(f"PCA needs at least 2 valid pixels, the raster has {n}.")
        self.scaler_ = Standardizer(self.standardize).fit_moments(n, total, gram)
        mean = total / n
        cov = (gram - n * np.outer(mean, mean)) / (n - 1)
        s = self.scaler_.scale_
        cov = cov / np.outer(s, s)
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1]
        values, vectors = np.maximum(values[order], 0.0), vectors[:, order]
        # deterministic signs: the largest |loading| of each component is positive
        signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(d)])
        vectors = vectors * np.where(signs == 0, 1, signs)
        self.components_ = vectors[:, :self.n_components].T
        self.explained_variance_ = values[:self.n_components]
        self.explained_variance_ratio_ = values[:self.n_components] / values.sum()
        self.n_samples_ = int(n)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.project(self.scaler_.transform(np.asarray(x, dtype=np.float64)))

    def project(self, z: np.ndarray) -> np.ndarray:
        """Components of already standardised pixels."""
        return z @ self.components_.T

    def metrics(self) -> dict:
        return {"explained_variance": self.explained_variance_.tolist(),
                "explained_variance_ratio": self.explained_variance_ratio_.tolist(),
                "cumulative_explained_variance_ratio": np.cumsum(self.explained_variance_ratio_).tolist(),
                "n_pixels": self.n_samples_}
