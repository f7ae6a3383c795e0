"""Fit once, apply everywhere: the flow the analysis stages (reduce, cluster) share.

Every pass fans out over raster windows in Ray tasks (a few windows each, a bounded
number in flight) and sends back only small things: moments, sampled pixels, or, from the
apply pass, the record of each output block the task wrote itself (the write stage,
:class:`rayvit.io.cog.BlockWriter`). No process holds the whole raster, and the driver
never receives an output block.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import joblib
import numpy as np
import ray

from .. import __version__, report
from ..console import Progress, progress_enabled, progress_on
from ..errors import InputError
from ..grid import Block
from ..io.mosaic import Mosaic, open_mosaic
from ..io import sources, storage
from ..io.storage import fs_for, is_local
from ..io.cog import BlockWriter
from ..io.writer import FeatureWriter
from ..runtime import init_ray
from . import sampling

WINDOWS_PER_TASK = 4
# Statistics and samples use a fixed window grid, independent of the output --block-size,
# so a seeded sample (and everything fitted from it) is the same whatever the block size.
STATS_WINDOW = 256
# larger products are written as COG blocks + a VRT instead of one COG
SINGLE_FILE_MAX = 2 * 2**30


# Ray node id -> windows its tasks computed, since the stage began (provenance and tests)
NODES_SEEN: dict[str, int] = {}


@ray.remote(scheduling_strategy="SPREAD")
def _windows_task(fn: Callable, mosaic: Mosaic, windows: list, args: tuple) -> tuple[str, list]:
    return ray.get_runtime_context().get_node_id(), [fn(mosaic, w, i, *args) for i, w in windows]


def run_windows(fn: Callable, mosaic: Mosaic, windows: Sequence, *args, on_result=None,
                label: str | None = None) -> list:
    """``[fn(mosaic, window, index, *args) for each window]``, computed in Ray tasks.

    With ``on_result(index, value)`` results are handed over as they come (in any order)
    and not kept; at most two tasks per CPU are in flight. With ``label``, a progress bar
    (unless progress is off: :func:`rayvit.console.progress_on`).
    """
    mref, aref = ray.put(mosaic), ray.put(args)
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
                    NODES_SEEN[node] = NODES_SEEN.get(node, 0) + len(ids)
                    for i, value in zip(ids, values):
                        if on_result:
                            on_result(i, value)
                        else:
                            out[i] = value
                    bar.update(len(ids))
            if group is not None:
                pending[_windows_task.remote(fn, mref, group, aref)] = [i for i, _ in group]
    return out


def _moments(mosaic, window, index):
    return sampling.moments(mosaic, [window])


def _sample(mosaic, window, index, quotas, seed):
    return sampling.sample_window(mosaic, window, int(quotas[index]), seed, index)


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


def statistics(mosaic: Mosaic) -> Pixels:
    windows = sampling.grid_windows(mosaic.grid.height, mosaic.grid.width, STATS_WINDOW)
    parts = run_windows(_moments, mosaic, windows, label="statistics")
    counts = np.array([p[0][0] for p in parts], dtype=np.int64)
    if counts.sum() == 0:
        raise InputError(f"raster {mosaic.sources[0].url!r} has no valid pixel (everything is nodata).")
    return Pixels(windows, counts, sum(p[1] for p in parts), sum(p[2] for p in parts))


def sample(mosaic: Mosaic, pixels: Pixels, n: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of ``n`` valid pixels across the whole raster (all if fewer)."""
    quotas = sampling.allocate(pixels.counts, n, seed)      # all pixels when there are fewer
    parts = run_windows(_sample, mosaic, pixels.windows, quotas, seed, label="sample")
    return np.concatenate([p for p in parts if len(p)], axis=0)


@dataclass
class Product:
    """One raster a stage writes: ``<name>.tif``, from the model's method ``method``."""

    name: str
    count: int
    dtype: str
    nodata: float
    descriptions: list
    method: str = "apply"
    colormap: dict | None = None
    categories: list | None = None
    quantized: bool = False       # int8/uint8 features with a scale/offset per band (io.quantize)


@dataclass
class AnalysisResult:
    output: str
    outdir: str
    model_path: str
    metrics: dict
    elapsed_s: float
    n_pixels: int
    extra: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)   # wall phases, seconds (see run())

    def summary(self) -> str:
        nodes = len(self.extra.get("windows_per_node", {}))
        line = (f"{self.n_pixels} valid pixels in {self.elapsed_s:.1f} s on {nodes} Ray node(s) -> "
                f"{self.output} (model {self.model_path})")
        if "hits" in self.extra:
            line += f"\n{self.extra['n_hits']} hits -> {self.extra['hits']}"
        if "hotspots" in self.extra:
            line += f"\n{self.extra['n_hotspots']} hot spots -> {self.extra['hotspots']}"
        if self.timings:
            line += "\ntime: " + ", ".join(f"{label} {self.timings[key]:.1f} s" for key, label in PHASES
                                          if key in self.timings)
        return line


PHASES = (("ray_start_s", "Ray start"), ("statistics_s", "statistics"), ("fit_s", "fit"),
          ("writing_s", "writing"), ("commit_s", "commit"))


def open_input(path: str, bands: Sequence[int] | None = None, s3_endpoint: str | None = None) -> Mosaic:
    """A feature (or any) raster as the analysis stages read it: int8/uint8 bands with a
    scale and offset come back as floats."""
    return open_mosaic([path], bands=bands, s3_endpoint=s3_endpoint, dequantize=True)


def source_sidecar(path: str) -> dict:
    """The rayvit sidecar beside a raster (``features.gti.gpkg``/``.vrt``/``.tif`` ->
    ``features.json``), or {}."""
    path = str(path).removesuffix(sources.SUFFIX)
    stem = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    try:
        with storage.filesystem(stem + ".json", storage.storage_options(path)).open(
                storage.local_path(stem + ".json") if storage.is_local(path) else stem + ".json") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def fingerprint(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_model(path: str, bands: int, stage: str) -> dict:
    """A rayvit model bundle from ``model.joblib``; errors name the file and the mismatch."""
    try:
        if is_local(path):
            bundle = joblib.load(path)
        else:
            with fs_for(path).open(path, "rb") as fh:
                bundle = joblib.load(fh)
    except Exception as exc:
        raise InputError(f"--model {path!r} could not be read ({type(exc).__name__}); give a "
                         f"model.joblib written by rayvit {stage}.") from exc
    if not isinstance(bundle, dict) or bundle.get("rayvit_model") != 1:
        raise InputError(f"--model {path!r} is not a rayvit model (no rayvit_model marker); give a "
                         f"model.joblib written by rayvit {stage}.")
    if bundle["stage"] != stage:
        raise InputError(f"--model {path!r} was written by rayvit {bundle['stage']}, not {stage}; give a "
                         f"model.joblib from an earlier `rayvit {stage}` run.")
    if bundle["n_bands"] != bands:
        raise InputError(f"--model {path!r} was fitted on {bundle['n_bands']} bands, but the input "
                         f"has {bands}; apply it to a raster with the same bands.")
    return bundle


def save_json(path: str, value) -> None:
    with open(path + ".tmp", "w") as fh:
        json.dump(value, fh, indent=1, default=str)
    os.replace(path + ".tmp", path)


def _apply_product(mosaic, window, index, model, product: Product, writer: BlockWriter, block_size: int):
    """Apply the model to one window, write it as an output block; return its record, the
    value counts of an integer product and the number of valid pixels."""
    data, valid = mosaic.read(*window)
    x = data[:, valid].T.astype(np.float64)
    values = getattr(model, product.method)(x) if len(x) else np.zeros((0, product.count))
    # writer.dtype: the product's, or float32 for an int8/uint8 product quantised at commit
    out = np.full((product.count, window[2], window[3]), writer.nodata, dtype=writer.dtype)
    out[:, valid] = np.asarray(values).T.astype(writer.dtype)
    r, c, rows, cols = window
    record = writer.write(Block(r // block_size, c // block_size, r, c, rows, cols), out, valid)
    counts = np.bincount(out[0][valid].astype(np.int64)) if np.issubdtype(out.dtype, np.integer) else None
    return record, counts, int(valid.sum())


def write_blocks(mosaic: Mosaic, model, writer: FeatureWriter, product: Product,
                 block_size: int) -> tuple[list[Block], np.ndarray | None, int]:
    """Apply ``product.method`` of a fitted model to every block in Ray tasks that write the
    blocks themselves; the driver appends their records to the manifest. Returns the blocks
    with data, for integer products the count of each value over all valid pixels (cluster
    sizes), and the number of valid pixels."""
    written: list[Block] = []
    windows = sampling.grid_windows(mosaic.grid.height, mosaic.grid.width, block_size)
    tally = np.zeros(0, dtype=np.int64)
    n_valid = 0

    def collect(i, result):
        nonlocal tally, n_valid
        record, counts, n = result
        writer.record([record])
        n_valid += n
        if counts is not None:
            size = max(len(counts), len(tally))
            tally = np.pad(tally, (0, size - len(tally))) + np.pad(counts, (0, size - len(counts)))
        if record["data"]:
            r, c, rows, cols = windows[i]
            written.append(Block(record["by"], record["bx"], r, c, rows, cols))

    block_writer = writer.block_writer()
    run_windows(_apply_product, mosaic, windows, model, product, block_writer, block_size,
                on_result=collect, label=f"write {product.name}")
    is_int = np.issubdtype(np.dtype(block_writer.dtype), np.integer)
    return sorted(written, key=lambda b: (b.by, b.bx)), (tally if is_int else None), n_valid


def run(stage: str, input_path: str | Mosaic, output: str, config: dict, fit: Callable,
        model_path: str | None, products: Callable[[object], list[Product]],
        metrics: Callable[..., dict], bands=None, block_size: int = 512, overwrite: bool = False,
        address: str | None = None, progress: bool = True, statistics_pass: bool = True,
        extra_files: Callable[[object, Mosaic, str], None] | None = None,
        dry_run: bool = False) -> AnalysisResult:
    """The whole stage: open, statistics, fit (or load), apply, write rasters + model + metrics.

    ``fit(mosaic, pixels)`` (``pixels`` is None without ``statistics_pass``) returns the
    model; ``products(model)`` the rasters to write; ``metrics(model, mosaic, pixels, tally)``
    the metrics (``tally``: value counts of the first integer product). Everything but the
    products' sidecars is written before the products are committed, sidecars last.
    ``input_path`` may be an opened mosaic (anything with ``grid``, ``count``, ``bands``,
    ``dtype``, ``sources`` and ``read``), e.g. two rasters read side by side.
    """
    t0 = time.monotonic()
    if block_size < 1:
        raise InputError(f"--block-size must be >= 1 pixel, got {block_size}.")
    mosaic = open_input(input_path, bands) if isinstance(input_path, str) else input_path
    input_path = input_path if isinstance(input_path, str) else config.pop("input")
    bundle = load_model(model_path, mosaic.count, stage) if model_path else None
    config = dict(config, stage=stage, input=input_path, bands=list(mosaic.bands),
                  model_file=model_path, block_size=block_size)
    if dry_run:
        g = mosaic.grid
        n_blocks = len(sampling.grid_windows(g.height, g.width, block_size))
        plan = (f"input:  {input_path}: {g.width}x{g.height} px = {g.width * g.height} pixels x "
                f"{mosaic.count} bands ({mosaic.dtype}), {g.width * g.height * mosaic.count * 8} bytes "
                f"as float64\nwork:   {n_blocks} blocks of {block_size} px in Ray tasks; "
                f"{'a statistics pass, ' if statistics_pass and not bundle else ''}"
                f"{'the saved model ' + repr(model_path) if bundle else 'a fit'}, then one pass per product\n"
                f"output: {output}: one band per output of the model, {g.width}x{g.height} px "
                f"(float32: {g.width * g.height * 4} bytes per band uncompressed)")
        return AnalysisResult(None, str(output), model_path, {}, time.monotonic() - t0, 0,
                              extra={"plan": plan})
    from ..report.quicklook import quicklook

    with progress_enabled(progress):
        timings: dict[str, float] = {}

        def phase(name: str, since: float) -> float:
            now = time.monotonic()
            timings[name] = timings.get(name, 0.0) + now - since
            return now

        t1 = time.monotonic()
        init_ray(address)
        t1 = phase("ray_start_s", t1)
        NODES_SEEN.clear()
        pixels = statistics(mosaic) if statistics_pass else None
        t1 = phase("statistics_s", t1)
        model = bundle["model"] if bundle else fit(mosaic, pixels)
        t1 = phase("fit_s", t1)
        run_id = fingerprint(config)
        planned = products(model)
        writers = [FeatureWriter(output, mosaic.grid, p.count, p.descriptions, p.dtype, product=p.name,
                                 nodata=p.nodata, colormap=p.colormap, quantized=p.quantized) for p in planned]
        state = writers[0].check(run_id, overwrite)
        writers[0].start(run_id, config, overwrite=state == "overwrite")
        writers[0].check_reachable()
        written, tally, n_valid = [], None, 0
        for writer, product in zip(writers, planned):
            writer.start(run_id, config, overwrite=False)
            blocks, counts, n = write_blocks(mosaic, model, writer, product, block_size)
            written.append(blocks)
            if tally is None:
                tally, n_valid = counts, n
        t1 = phase("writing_s", t1)
        stats = metrics(model, mosaic, pixels, tally)
        t1 = phase("fit_s", t1)       # metrics are part of the fit's evaluation (e.g. silhouette)
        model_file = writers[0].path("model.joblib")
        if not bundle:
            joblib.dump({"rayvit_model": 1, "stage": stage, "model": model, "n_bands": mosaic.count,
                         "bands": list(mosaic.bands), "config": config, "rayvit_version": __version__},
                        model_file + ".tmp")
            os.replace(model_file + ".tmp", model_file)
        save_json(writers[0].path("metrics.json"), stats)
        if extra_files:
            extra_files(model, mosaic, writers[0].outdir)
        finals = []
        for writer, product, blocks in zip(writers, planned, written):
            def sidecar(product=product):   # written last: the commit so far is timed
                now = time.monotonic()
                out = {"rayvit_version": __version__, "run_id": run_id, **config, "metrics": stats,
                       "timings": dict(timings, commit_s=now - t1, total_s=now - t0),
                       "n_valid_pixels": pixels.n if pixels else n_valid}
                return dict(out, categories=product.categories) if product.categories else out

            size = mosaic.grid.width * mosaic.grid.height * product.count * np.dtype(product.dtype).itemsize
            finals.append(writer.commit(blocks, single_file=size <= SINGLE_FILE_MAX, sidecar=sidecar))
            if product.categories:
                write_category_names(finals[-1], product.categories)
        first = planned[0]
        readable = writers[0].readable(finals[0])
        if readable:
            quicklook(readable, writers[0].path("quicklook.png"), categorical=first.colormap is not None,
                      colormap=first.colormap)
        phase("commit_s", t1)
        timings["total_s"] = time.monotonic() - t0
        report.write(writers[0].outdir, first.name, raster=readable)
        writers[0].publish(sidecars=[f"{p.name}.json" for p in planned])
        finals = [writers[0].url(os.path.relpath(f, writers[0].outdir)) for f in finals]
        model_file = writers[0].url("model.joblib") if not bundle else model_path
        return AnalysisResult(finals[0], str(output), model_file, stats, time.monotonic() - t0,
                              pixels.n if pixels else n_valid,
                              extra={"outputs": finals, "windows_per_node": dict(NODES_SEEN)}, timings=timings)


def write_category_names(path: str, names: list) -> None:
    """GDAL category names of band 1 (shown by QGIS and gdalinfo), in the PAM sidecar."""
    from xml.sax.saxutils import escape

    cats = "".join(f"<Category>{escape(str(n))}</Category>" for n in names)
    xml = (f'<PAMDataset><PAMRasterBand band="1"><CategoryNames>{cats}</CategoryNames>'
           "</PAMRasterBand></PAMDataset>\n")
    with open(path + ".aux.xml.tmp", "w") as fh:
        fh.write(xml)
    os.replace(path + ".aux.xml.tmp", path + ".aux.xml")
