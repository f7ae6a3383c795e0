"""``BlockSource``: what every analysis stage reads, block by block, in Ray tasks near the data.

A block source is a multi-band raster on one grid: a rayvit product (found through its tile
index or VRT, or one COG), any other multi-band raster (a third party's embeddings as a
GeoTIFF/COG/VRT: nodata honoured, bands with a scale/offset read as floats), or two of them
read side by side (``change``). It is the one place that knows how windows are read and how
work over them fans out: :meth:`BlockSource.map` runs a function over windows in Ray tasks (a
few windows each, a bounded number in flight) that get back only small things (moments,
sampled pixels, the record of an output block a task wrote itself), so no process holds the
whole raster and the driver never receives an output block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from ..console import Progress, progress_on
from ..errors import InputError
from ..io import chunked, quantize, sampling, sources, storage, tessera
from ..io.mosaic import Mosaic, open_mosaic

WINDOWS_PER_TASK = 4
# Statistics and samples use a fixed window grid, independent of the output --block-size,
# so a seeded sample (and everything fitted from it) is the same whatever the block size.
STATS_WINDOW = 256


def _windows_task(fn: Callable, mosaic, windows: list, args: tuple) -> tuple[str, list]:
    import ray

    return ray.get_runtime_context().get_node_id(), [fn(mosaic, w, i, *args) for i, w in windows]


@lru_cache(maxsize=1)
def _remote_windows_task():
    """:func:`_windows_task` as a Ray task, made once per process (KMeans maps every Lloyd step)."""
    import ray

    return ray.remote(scheduling_strategy="SPREAD")(_windows_task)


@dataclass
class Pixels:
    """What the statistics pass learnt: counts per window and moments of all valid pixels."""

    windows: list
    counts: np.ndarray
    total: np.ndarray
    gram: np.ndarray

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def band_variance(self) -> np.ndarray:
        """Population variance of each band over all valid pixels."""
        mean = self.total / self.n
        return np.maximum(np.diag(self.gram) / self.n - mean * mean, 0.0)


def _moments(mosaic, window, index):
    return sampling.moments(mosaic, [window])


def _sample(mosaic, window, index, quotas, seed):
    return sampling.sample_window(mosaic, window, int(quotas[index]), seed, index)


@dataclass
class BlockSource:
    """A raster read window by window (``mosaic``: anything with ``grid``, ``count``,
    ``bands``, ``dtype``, ``sources`` and ``read``), named ``path`` in messages."""

    mosaic: Mosaic
    path: str
    nodes: dict = field(default_factory=dict)    # Ray node id -> windows its tasks read (provenance)

    @classmethod
    def open(cls, path: str, bands: Sequence[int] | None = None, s3_endpoint: str | None = None) -> "BlockSource":
        """A feature (or any) raster: int8/uint8 bands with a scale and offset come back as floats."""
        return cls(open_input(path, bands, s3_endpoint), str(path))

    @property
    def grid(self):
        return self.mosaic.grid

    @property
    def count(self) -> int:
        return self.mosaic.count

    @property
    def bands(self) -> tuple:
        return tuple(self.mosaic.bands)

    def read(self, row: int, col: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        return self.mosaic.read(row, col, rows, cols)

    def windows(self, size: int) -> list[tuple[int, int, int, int]]:
        return sampling.grid_windows(self.grid.height, self.grid.width, size)

    @property
    def sidecar(self) -> dict:
        """The rayvit sidecar of the raster, ``{}`` for another's."""
        return source_sidecar(self.path)

    def map(self, fn: Callable, windows: Sequence, *args, on_result=None, label: str | None = None) -> list:
        """``[fn(mosaic, window, index, *args) for each window]``, computed in Ray tasks.

        With ``on_result(index, value)`` results are handed over as they come (in any order)
        and not kept; at most two tasks per CPU are in flight. With ``label``, a progress bar
        (unless progress is off: :func:`rayvit.console.progress_on`)."""
        import ray

        task = _remote_windows_task()
        mref, aref = ray.put(self.mosaic), ray.put(args)
        indexed = list(enumerate(windows))
        groups = [indexed[i:i + WINDOWS_PER_TASK] for i in range(0, len(indexed), WINDOWS_PER_TASK)]
        limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending, out = {}, [None] * len(windows)
        with Progress(len(windows), label or "", "window", enabled=bool(label) and progress_on()) as bar:
            for group in groups + [None]:
                while pending and (group is None or len(pending) >= limit):
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        ids = pending.pop(ref)
                        node, values = ray.get(ref)
                        self.nodes[node] = self.nodes.get(node, 0) + len(ids)
                        for i, value in zip(ids, values):
                            if on_result:
                                on_result(i, value)
                            else:
                                out[i] = value
                        bar.update(len(ids))
                if group is not None:
                    pending[task.remote(fn, mref, group, aref)] = [i for i, _ in group]
        return out

    def statistics(self) -> Pixels:
        """Counts and moments (sum, Gram matrix) of every valid pixel, over a fixed window grid."""
        windows = self.windows(STATS_WINDOW)
        parts = self.map(_moments, windows, label="statistics")
        counts = np.array([p[0][0] for p in parts], dtype=np.int64)
        if counts.sum() == 0:
            raise InputError(f"raster {self.path!r} has no valid pixel (everything is nodata).")
        return Pixels(windows, counts, sum(p[1] for p in parts), sum(p[2] for p in parts))

    def sample(self, pixels: Pixels, n: int, seed: int) -> np.ndarray:
        """A seeded uniform sample of ``n`` valid pixels across the whole raster (all if fewer)."""
        quotas = sampling.allocate(pixels.counts, n, seed)      # all pixels when there are fewer
        parts = self.map(_sample, pixels.windows, quotas, seed, label="sample")
        return np.concatenate([p for p in parts if len(p)], axis=0)


def open_input(path: str, bands: Sequence[int] | None = None, s3_endpoint: str | None = None) -> Mosaic:
    """A feature (or any) raster as the analysis stages read it: int8/uint8 bands with a
    scale and offset come back as floats; ``alphaearth:PATH`` (or int8 bands named
    A00..A63) is read as AlphaEarth's codes (:func:`rayvit.io.quantize.alphaearth_values`),
    a Zarr product with zarr-python (:class:`rayvit.io.chunked.ZarrRaster`), a TESSERA tile
    (``tessera:PATH`` or its ``.npy``) through its scales (:class:`rayvit.io.tessera.TesseraTile`)."""
    path, alphaearth = quantize.alphaearth_path(path)
    if chunked.is_zarr(path):
        return chunked.ZarrRaster.open(path, bands, s3_endpoint)
    path, is_tessera = tessera.tessera_path(path)
    if is_tessera:
        return tessera.TesseraTile.open(path, bands)
    return open_mosaic([path], bands=bands, s3_endpoint=s3_endpoint, dequantize=True, alphaearth=alphaearth)


def source_sidecar(path: str) -> dict:
    """The rayvit sidecar beside a raster (``features.gti.gpkg``/``.vrt``/``.tif`` ->
    ``features.json``), or {}."""
    path = tessera.tessera_path(quantize.alphaearth_path(path)[0])[0].removesuffix(sources.SUFFIX).rstrip("/")
    stem = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    try:
        with storage.filesystem(stem + ".json", storage.storage_options(path)).open(
                storage.local_path(stem + ".json") if storage.is_local(path) else stem + ".json") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}
