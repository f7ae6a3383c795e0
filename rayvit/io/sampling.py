"""Streamed statistics and seeded samples of a mosaic, from windows, never whole bands."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .mosaic import Mosaic


def sample_windows(height: int, width: int, n: int, window: int, seed: int) -> list[tuple[int, int, int, int]]:
    """``n`` seeded random windows ``(row, col, rows, cols)`` inside a ``height x width`` grid.

    When the grid holds fewer than ``n`` windows, a regular grid of windows covering it all
    is returned instead (the statistics are then exact).
    """
    rows, cols = min(window, height), min(window, width)
    ny, nx = -(-height // rows), -(-width // cols)
    if ny * nx <= n:
        return [(min(i * rows, height - rows), min(j * cols, width - cols), rows, cols)
                for i in range(ny) for j in range(nx)]
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(0, height - rows + 1)), int(rng.integers(0, width - cols + 1)), rows, cols)
            for _ in range(n)]


def band_statistics(mosaic: Mosaic, n_windows: int = 32, window: int = 256,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of valid pixels over seeded sample windows of the mosaic."""
    g = mosaic.grid
    total = np.zeros(mosaic.count)
    total_sq = np.zeros(mosaic.count)
    n = 0
    for row, col, rows, cols in sample_windows(g.height, g.width, n_windows, window, seed):
        data, valid = mosaic.read(row, col, rows, cols)
        px = data[:, valid].astype(np.float64)
        total += px.sum(axis=1)
        total_sq += (px * px).sum(axis=1)
        n += px.shape[1]
    if n == 0:
        raise InputError(
            f"no valid pixel found in {len(mosaic.sources)} input raster(s) "
            f"({mosaic.sources[0].url!r}...) over the requested extent: everything is nodata.")
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
    return mean, np.where(std > 0, std, 1.0)


def grid_windows(height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """Row-major ``(row, col, rows, cols)`` windows of at most ``size`` px covering a grid."""
    return [(r, c, min(size, height - r), min(size, width - c))
            for r in range(0, height, size) for c in range(0, width, size)]


def valid_pixels(mosaic: Mosaic, window: tuple[int, int, int, int]) -> np.ndarray:
    """The valid pixels of a window as an ``(n, bands)`` float64 array."""
    data, valid = mosaic.read(*window)
    return data[:, valid].T.astype(np.float64)


def moments(mosaic: Mosaic, windows) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per window valid-pixel counts, and summed pixels and Gram matrix (float64) over all."""
    d = mosaic.count
    counts = np.zeros(len(windows), dtype=np.int64)
    total, gram = np.zeros(d), np.zeros((d, d))
    for i, w in enumerate(windows):
        x = valid_pixels(mosaic, w)
        counts[i] = len(x)
        total += x.sum(axis=0)
        gram += x.T @ x
    return counts, total, gram


def allocate(counts: np.ndarray, n: int, seed: int) -> np.ndarray:
    """How many of ``n`` uniformly sampled pixels fall in each window (without replacement)."""
    total = int(counts.sum())
    if n >= total:
        return counts.copy()
    rng = np.random.default_rng(seed)
    return rng.multivariate_hypergeometric(counts, n)


def sample_window(mosaic: Mosaic, window, k: int, seed: int, index: int) -> np.ndarray:
    """``k`` valid pixels of one window drawn uniformly, seeded by ``(seed, index)``."""
    x = valid_pixels(mosaic, window)
    if k >= len(x):
        return x
    rng = np.random.default_rng([seed, index])
    return x[np.sort(rng.choice(len(x), size=k, replace=False))]
