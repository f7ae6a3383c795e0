"""Merge overlapping tile features into one output block (pure functions on arrays).

Each contribution is one tile's features cropped to the block. Contributions are always
merged in tile rank order (row-major tile index), never arrival order, so the result is
the same whatever the number of actors, batch size or block size:

* ``center`` - each tile keeps only its central stride x stride part. The planner crops
  tiles to those parts, which partition the grid, so here it is the same as ``first``;
* ``first`` / ``last`` - the lowest / highest ranked tile with a valid value wins;
* ``mean`` - the true mean of all valid contributions (IAMAP keeps a running pairwise
  mean, which weights later tiles more);
* ``min`` / ``max`` - element-wise over valid contributions.

Pixels with no valid contribution are NaN and invalid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Contribution:
    """One tile's features inside a block: placed at ``(row, col)`` of the block."""

    rank: int
    row: int
    col: int
    features: np.ndarray  # (D, h, w) float32
    valid: np.ndarray     # (h, w) bool

    def slices(self) -> tuple[slice, slice]:
        h, w = self.valid.shape
        return slice(self.row, self.row + h), slice(self.col, self.col + w)


Merger = Callable[[tuple[int, int, int], Sequence[Contribution]], tuple[np.ndarray, np.ndarray]]


def _first(shape, contributions):
    out = np.full(shape, np.nan, dtype=np.float32)
    valid = np.zeros(shape[1:], dtype=bool)
    for c in contributions:
        sy, sx = c.slices()
        take = c.valid & ~valid[sy, sx]
        out[:, sy, sx][:, take] = c.features[:, take]
        valid[sy, sx] |= take
    return out, valid


def merge_first(shape, contributions):
    return _first(shape, sorted(contributions, key=lambda c: c.rank))


def merge_last(shape, contributions):
    return _first(shape, sorted(contributions, key=lambda c: -c.rank))


def merge_mean(shape, contributions):
    total = np.zeros(shape, dtype=np.float64)
    count = np.zeros(shape[1:], dtype=np.int32)
    for c in sorted(contributions, key=lambda c: c.rank):
        sy, sx = c.slices()
        total[:, sy, sx] += np.where(c.valid, c.features, 0.0)
        count[sy, sx] += c.valid
    valid = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (total / count).astype(np.float32)
    out[:, ~valid] = np.nan
    return out, valid


def _extreme(reduce):
    def merge(shape, contributions):
        out = np.full(shape, np.nan, dtype=np.float32)
        valid = np.zeros(shape[1:], dtype=bool)
        for c in sorted(contributions, key=lambda c: c.rank):
            sy, sx = c.slices()
            cur = out[:, sy, sx]
            new = np.where(c.valid, c.features, np.nan)
            # fmin/fmax ignore NaN, so a pixel's first valid value is taken as is
            out[:, sy, sx] = reduce(cur, new)
            valid[sy, sx] |= c.valid
        return out, valid
    return merge


MERGERS: dict[str, Merger] = {
    "center": merge_first,
    "first": merge_first,
    "last": merge_last,
    "mean": merge_mean,
    "min": _extreme(np.fmin),
    "max": _extreme(np.fmax),
}


def get_merger(method: str | Merger) -> Merger:
    """A merge function by name (or a callable with the same signature)."""
    if callable(method):
        return method
    try:
        return MERGERS[method]
    except KeyError:
        raise InputError(f"unknown merge method {method!r}; valid: {', '.join(MERGERS)}.") from None


def merge(shape: tuple[int, int, int], contributions: Sequence[Contribution],
          method: str | Merger = "center") -> tuple[np.ndarray, np.ndarray]:
    """Merge ``contributions`` into a ``shape`` = (D, rows, cols) block: (float32 array, valid)."""
    return get_merger(method)(shape, contributions)
