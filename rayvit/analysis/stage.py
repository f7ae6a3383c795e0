"""Analysis stages as estimators over a block source, and the one runner that applies them.

A stage (:class:`Stage`) is a small class in scikit-learn's sense: its parameters are set
and checked when it is made, before anything is read; :meth:`Stage.fit` learns from a
:class:`~.source.BlockSource` and returns the stage; :meth:`Stage.transform` maps the valid
pixels of a block to the values of each product it declares (:meth:`Stage.products`); what
else it yields (hits, hot spots, training samples) :meth:`Stage.extras` returns as data. A
stage may also look at each block it wrote (:meth:`Stage.block_part`, in the apply task),
so that what its extras need comes from the same pass.

:func:`run` does, in this order, for all of them: parameters and the output location
checked -> statistics pass if asked -> fit, or load a saved model -> apply in Ray tasks
that write the blocks -> extras, metrics and the model written -> products assembled ->
quicklook and report -> the sidecars, last (:mod:`rayvit.io.writer`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..version import __version__
from ..console import progress_enabled
from ..errors import InputError
from ..grid import Block
from ..io import storage
from ..io.cog import BlockWriter
from ..io.writer import SINGLE_FILE_MAX, ProductWriter, fingerprint
from .source import BlockSource, Pixels

@dataclass
class Product:
    """One raster a stage writes: ``<name>.tif`` (or blocks and ``<name>.gti.gpkg``), from
    the stage's :meth:`Stage.transform` with ``method``."""

    name: str
    count: int
    dtype: str
    nodata: float
    descriptions: list
    method: str = "apply"
    colormap: dict | None = None
    categories: list | None = None
    quantized: bool = False       # int8/uint8 features with a scale/offset per band (io.quantize)


class Stage:
    """An analysis stage. Subclasses set the class attributes and override what they need."""

    name: ClassVar[str]                   # the registry's key: CLI command, job-spec key
    product: ClassVar[str]                # its first product's name, known before the fit
    statistics: ClassVar[bool] = False    # wants the statistics pass (moments of every pixel)
    saves_model: ClassVar[bool] = False   # writes model.joblib, which ``--model`` applies later
    model_: Any = None                    # what the fit learnt (or a saved model's)

    def config(self) -> dict:
        """The parameters that decide the outputs (the run's identity)."""
        return {}

    def fit(self, source: BlockSource, pixels: Pixels | None) -> "Stage":
        raise NotImplementedError

    def products(self) -> list[Product]:
        raise NotImplementedError

    def transform(self, x: np.ndarray, product: Product) -> np.ndarray:
        """The values ``(n, product.count)`` of the valid pixels ``x`` ``(n, bands)``."""
        return getattr(self.model_, product.method)(x)

    def block_part(self, window, values: np.ndarray, valid: np.ndarray):
        """In the apply task, the first product's values of a block: what :meth:`extras`
        needs from it (small), or None."""
        return None

    def take(self, index: int, part) -> None:
        """In the driver, as each block's part arrives (in any order): keep what is needed."""
        if part is not None:
            self.parts_ = getattr(self, "parts_", {})
            self.parts_[index] = part

    def extras(self, source: BlockSource, windows: list) -> dict[str, Any]:
        """Files besides the rasters, as data: ``{file name: GeoDataFrame or Arrow table}``
        (``windows``: the apply pass's, in the order of :meth:`take`'s indexes)."""
        return {}

    def metrics(self, source: BlockSource, pixels: Pixels | None, tally: np.ndarray | None) -> dict:
        return {}

    def plan(self, output: str) -> str:
        """What a dry run adds to the plan (the extras it would write)."""
        return ""


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
        for name, path in self.extra.get("files", {}).items():
            line += f"\n{self.extra['n_' + name]} {name} -> {path}"      # e.g. 100 hits -> out/hits.parquet
        if self.timings:
            line += "\ntime: " + ", ".join(f"{label} {self.timings[key]:.1f} s" for key, label in PHASES
                                          if key in self.timings)
        return line


PHASES = (("ray_start_s", "Ray start"), ("statistics_s", "statistics"), ("fit_s", "fit"),
          ("writing_s", "writing"), ("commit_s", "commit"))


def load_model(path: str, bands: int, stage: str) -> dict:
    """A rayvit model bundle from ``model.joblib``; errors name the file and the mismatch."""
    import joblib

    try:
        if storage.is_local(path):
            bundle = joblib.load(path)
        else:
            with storage.fs_for(path).open(path, "rb") as fh:
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


def _apply(mosaic, window, index, stage: Stage, product: Product, writer: BlockWriter, block_size: int,
           first: bool):
    """Ray task: one window's product values, written as an output block; returns its
    record, the value counts of an integer product, the number of valid pixels and (the
    first product) what the stage keeps of the block."""
    data, valid = mosaic.read(*window)
    x = data[:, valid].T.astype(np.float64)
    values = stage.transform(x, product) if len(x) else np.zeros((0, product.count))
    # writer.dtype: the product's, or float32 for an int8/uint8 product quantised at commit
    out = np.full((product.count, window[2], window[3]), writer.nodata, dtype=writer.dtype)
    out[:, valid] = np.asarray(values).T.astype(writer.dtype)
    r, c, rows, cols = window
    record = writer.write(Block(r // block_size, c // block_size, r, c, rows, cols), out, valid)
    counts = np.bincount(out[0][valid].astype(np.int64)) if np.issubdtype(out.dtype, np.integer) else None
    return record, counts, int(valid.sum()), stage.block_part(window, out, valid) if first else None


def write_blocks(source: BlockSource, stage: Stage, writer: ProductWriter, product: Product, block_size: int,
                 first: bool) -> tuple[list[Block], np.ndarray | None, int, list]:
    """Apply the stage to every block in Ray tasks that write the blocks themselves; the
    driver appends their records to the manifest (and hands the stage its part of each
    block of the first product). Returns the blocks with data, for integer products the
    count of each value over all valid pixels (cluster sizes), the number of valid pixels
    and the windows."""
    windows = source.windows(block_size)
    written: list[Block] = []
    tally, n_valid = np.zeros(0, dtype=np.int64), 0

    def collect(i, result):
        nonlocal tally, n_valid
        record, counts, n, part = result
        if first:
            stage.take(i, part)
        writer.record([record])
        n_valid += n
        if counts is not None:
            size = max(len(counts), len(tally))
            tally = np.pad(tally, (0, size - len(tally))) + np.pad(counts, (0, size - len(counts)))
        if record["data"]:
            written.append(Block(record["by"], record["bx"], *windows[i]))

    block_writer = writer.block_writer()
    source.map(_apply, windows, stage, product, block_writer, block_size, first, on_result=collect,
               label=f"write {product.name}")
    is_int = np.issubdtype(np.dtype(block_writer.dtype), np.integer)
    return sorted(written, key=lambda b: (b.by, b.bx)), (tally if is_int else None), n_valid, windows


def dry_plan(stage: Stage, source: BlockSource, output: str, block_size: int, saved: bool) -> str:
    g = source.grid
    n_blocks = len(source.windows(block_size))
    return (f"input:  {source.path}: {g.width}x{g.height} px = {g.width * g.height} pixels x "
            f"{source.count} bands ({source.mosaic.dtype}), {g.width * g.height * source.count * 8} bytes "
            f"as float64\nwork:   {n_blocks} blocks of {block_size} px in Ray tasks; "
            f"{'a statistics pass, ' if stage.statistics else ''}"
            f"{'the saved model' if saved else 'a fit'}, then one pass per product\n"
            f"output: {output}: one band per output of the model, {g.width}x{g.height} px "
            f"(float32: {g.width * g.height * 4} bytes per band uncompressed)" + stage.plan(output))


def zarr_attributes(stage: Stage, product: Product) -> dict:
    """A Zarr product's attributes: what it is, its categories (CF ``flag_values`` and
    ``flag_meanings``) and colour table (``colormap``: value -> RGBA, as GDAL's)."""
    attrs = {"long_name": f"rayvit {stage.name}: {product.name}", "rayvit_version": __version__}
    if product.categories:
        attrs.update(flag_values=list(range(len(product.categories))),
                     flag_meanings=" ".join(str(c).replace(" ", "_") for c in product.categories))
    if product.colormap:
        attrs["colormap"] = {str(k): list(v) for k, v in sorted(product.colormap.items())}
    return attrs


def run(stage: Stage, source: BlockSource, output: str, model: str | None = None, block_size: int = 512,
        overwrite: bool = False, address: str | None = None, progress: bool = True,
        dry_run: bool = False, format: str = "gtiff") -> AnalysisResult:
    """The whole stage (see the module docstring). ``model``: a saved ``model.joblib`` to apply;
    ``format``: ``gtiff`` (GeoTIFF products) or ``zarr`` (a Zarr store per product,
    :mod:`rayvit.io.chunked`)."""
    from ..options import FORMATS
    from .. import report
    from ..report.quicklook import quicklook
    from ..runtime import init_ray

    t0 = time.monotonic()
    if block_size < 1:
        raise InputError(f"--block-size must be >= 1 pixel, got {block_size}.")
    if format not in FORMATS:
        raise InputError(f"--format {format!r}: choose one of {', '.join(FORMATS)}.")
    bundle = load_model(model, source.count, stage.name) if model else None
    config = dict(stage.config(), stage=stage.name, input=source.path, bands=list(source.bands),
                  model_file=model, block_size=block_size, **({"format": format} if format != "gtiff" else {}))
    if dry_run:
        return AnalysisResult(None, str(output), model, {}, time.monotonic() - t0, 0,
                              extra={"plan": dry_plan(stage, source, output, block_size, bool(bundle))})
    run_id = fingerprint(config)
    out = ProductWriter(output, source.grid, 1, [stage.product], product=stage.product)
    out.check_writable()                        # the output location, before any pass (writing nothing)
    state = out.check(run_id, overwrite)
    timings, clock = {}, [time.monotonic()]

    def phase(name: str) -> None:
        now = time.monotonic()
        timings[name] = timings.get(name, 0.0) + now - clock[0]
        clock[0] = now

    with progress_enabled(progress):
        init_ray(address)
        phase("ray_start_s")
        pixels = source.statistics() if stage.statistics else None       # (a saved model's metrics too)
        phase("statistics_s")
        if bundle:
            stage.model_ = bundle["model"]
        else:
            stage.fit(source, pixels)
        phase("fit_s")
        out.start(run_id, config, overwrite=state == "overwrite")     # a bad input has left nothing
        out.check_reachable()
        products = stage.products()
        writers = [ProductWriter(output, source.grid, p.count, p.descriptions, p.dtype, product=p.name,
                                 nodata=p.nodata, colormap=p.colormap, quantized=p.quantized, categories=p.categories,
                                 format=format, block_size=block_size, attributes=zarr_attributes(stage, p))
                   for p in products]
        for w in writers:
            w.start(run_id, config, overwrite=False)      # its block folder (run.json is there)
        applied = [write_blocks(source, stage, w, p, block_size, first=i == 0)
                   for i, (w, p) in enumerate(zip(writers, products))]
        (_, tally, n_valid, windows) = applied[0]
        phase("writing_s")
        files = dict(stage.extras(source, windows), **{"metrics.json": stage.metrics(source, pixels, tally)})
        phase("fit_s")       # metrics are part of the fit's evaluation (e.g. silhouette)
        if not bundle and stage.saves_model:
            files["model.joblib"] = {"rayvit_model": 1, "stage": stage.name, "model": stage.model_,
                                     "n_bands": source.count, "bands": list(source.bands), "config": config,
                                     "rayvit_version": __version__}
        for name, data in files.items():
            out.write_file(name, data)
        g = source.grid
        finals = [w.assemble(blocks, single_file=g.width * g.height * p.count * np.dtype(p.dtype).itemsize
                             <= SINGLE_FILE_MAX) for w, p, (blocks, *_) in zip(writers, products, applied)]
        sidecars = [dict(config, rayvit_version=__version__, run_id=run_id, metrics=files["metrics.json"],
                         n_valid_pixels=pixels.n if pixels else n_valid,
                         **({"categories": p.categories} if p.categories else {})) for p in products]
        readable = out.readable(finals[0])
        if readable:
            quicklook(readable, out.path("quicklook.png"), categorical=products[0].colormap is not None,
                      colormap=products[0].colormap)
        phase("commit_s")
        timings["total_s"] = time.monotonic() - t0
        for s in sidecars:
            s["timings"] = dict(timings)
        report.write(out.outdir, products[0].name, raster=readable, sidecar=writers[0].sidecar(finals[0], sidecars[0]))
        for w, final, s in zip(writers, finals, sidecars):
            w.seal(final, s)         # last: a product whose sidecar exists is complete
        out.publish(sidecars=[f"{p.name}.json" for p in products])
    extra = {"outputs": [out.url(os.path.basename(f)) for f in finals], "windows_per_node": dict(source.nodes),
             "files": {}}
    for name, data in files.items():
        if name not in ("metrics.json", "model.joblib"):     # hits.parquet -> extra["hits"], extra["n_hits"]
            stem = name.split(".")[0]
            extra["files"][stem] = extra[stem] = out.url(name)
            extra[f"n_{stem}"] = len(data)
    return AnalysisResult(out.url(os.path.basename(finals[0])), str(output),
                          out.url("model.joblib") if "model.joblib" in files else model, files["metrics.json"],
                          time.monotonic() - t0, pixels.n if pixels else n_valid, extra=extra, timings=timings)
