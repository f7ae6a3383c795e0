"""``encode``: plan (driver, metadata only) -> Ray Data stream -> merge -> write blocks -> commit.

The driver plans (mosaic metadata, tiling, normalisation from sampled windows), then
streams encoded tiles back from the actor pool and keeps only the contributions of
blocks that are not finished yet. A block is merged and written as soon as every tile
that touches it has arrived, then dropped: memory follows the block size, not the area.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
from rasterio.crs import CRS

from .. import __version__
from ..analysis.sampling import band_statistics
from ..errors import InputError, RayvitError
from ..grid import Block, Tiling
from ..io.datasource import TileDatasource
from ..io.mosaic import Grid, Mosaic, open_mosaic
from ..io.writer import DTYPES, FeatureWriter
from .merge import MERGERS, Contribution, merge
from .spec import PRECISIONS, RESIZE_MODES, ModelInfo, ModelSpec

NORMALIZE_MODES = ("stats", "model", "none")
DEFAULT_MODEL = "vit_small_patch14_reg4_dinov2.lvd142m"
SINGLE_FILE_LIMIT = 2 << 30  # bytes: above this the product is blocks + VRT


def device_defaults(device: str) -> tuple[int, str]:
    """``(batch size, precision)`` when not given: 64 tiles in bf16 on a GPU, 16 in fp32 on CPU."""
    return (64, "bf16") if device.startswith("cuda") else (16, "fp32")


@dataclass
class EncodeOptions:
    """Every option of ``rayvit encode`` (CLI flags map 1:1; see ``rayvit encode --help``)."""

    model: str = DEFAULT_MODEL
    pretrained: bool = True
    weights: str | None = None
    layer: int = -1
    bands: Sequence[int] | None = None
    size: int | tuple[int, int] = 224
    stride: int | tuple[int, int] | None = None
    resize: str = "none"
    merge: str | None = None
    normalize: str = "stats"
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    scale: float | None = None
    crs: str | None = None
    res: float | None = None
    extent: Sequence[float] | None = None
    extent_crs: str | None = None
    skip_bad_inputs: bool = False
    dtype: str = "float32"
    compress: str = "zstd"
    blocks: bool = False
    block_size: int = 256
    device: str = "auto"
    precision: str | None = None
    actors: int | None = None
    threads: int | None = None
    batch_size: int | None = None
    overwrite: bool = False
    dry_run: bool = False
    address: str | None = None
    s3_endpoint: str | None = None
    progress: bool = True
    seed: int = 0

    def check(self) -> None:
        for name, value, valid in (("--resize", self.resize, RESIZE_MODES),
                                   ("--normalize", self.normalize, NORMALIZE_MODES),
                                   ("--dtype", self.dtype, DTYPES),
                                   ("--merge", self.merge or "center", tuple(MERGERS)),
                                   ("--precision", self.precision or "fp32", tuple(PRECISIONS))):
            if value not in valid:
                raise InputError(f"{name} {value!r} is not valid; choose one of: {', '.join(valid)}.")
        if (self.mean is None) != (self.std is None):
            raise InputError("--mean and --std go together: give both (one value per band) or neither.")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise InputError(f"--std values must be > 0, got {','.join(map(str, self.std))}.")
        if self.actors is not None and self.actors < 1:
            raise InputError(f"--actors must be >= 1, got {self.actors}.")


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


@dataclass
class EncodePlan:
    """What will run: derived from the options and the inputs' metadata, before any pixel."""

    options: EncodeOptions
    mosaic: Mosaic
    spec: ModelSpec
    info: ModelInfo
    tiling: Tiling
    feature_grid: Grid
    mean: tuple[float, ...]
    std: tuple[float, ...]
    merge: str
    device: str
    precision: str

    @property
    def batch_size(self) -> int:
        return self.options.batch_size or device_defaults(self.device)[0]

    @property
    def out_bytes(self) -> int:
        h, w = self.tiling.feature_shape
        return h * w * self.info.num_features * (2 if self.options.dtype == "float16" else 4)

    @property
    def tile_feature_bytes(self) -> int:
        """Bytes of one tile's features as the encoder returns them (float32)."""
        return self.info.num_features * math.prod(self.tiling.tile_feature_shape) * 4

    @property
    def single_file(self) -> bool:
        return not self.options.blocks and self.out_bytes <= SINGLE_FILE_LIMIT

    def config(self) -> dict:
        """Everything that determines the output bytes (and nothing that does not)."""
        o = self.options
        return {
            "inputs": [asdict(s) for s in self.mosaic.sources],
            "skipped_inputs": [d["input"] for d in self.mosaic.skipped],
            "bands": list(self.mosaic.bands),
            "grid": asdict(self.mosaic.grid),
            "model": self.spec.to_dict(),
            "weights_sha256": self.info.weights_sha256,
            "layer_index": self.info.layer,
            "normalize": o.normalize, "mean": list(self.mean), "std": list(self.std),
            "size": list(_pair(o.size)), "stride": [self.tiling.y.stride, self.tiling.x.stride],
            "footprint": [self.tiling.y.footprint, self.tiling.x.footprint],
            "merge": self.merge, "dtype": o.dtype, "compress": o.compress,
            "block_size": o.block_size, "single_file": self.single_file,
            "precision": self.precision,
            # the model's call shape can change the last bits of float features
            "batch_size": self.batch_size,
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.config(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        g, t = self.feature_grid, self.tiling
        a = g.affine
        return "\n".join([
            f"inputs:   {len(self.mosaic.sources)} raster(s), {self.mosaic.grid.width}x"
            f"{self.mosaic.grid.height} px, bands {','.join(map(str, self.mosaic.bands))}, "
            f"{self.mosaic.grid.area_km2():.3f} km2",
            f"model:    {self.spec.name} (layer {self.info.layer}/{self.info.n_layers - 1}, "
            f"{self.info.num_features} features, patch footprint {t.y.footprint}x{t.x.footprint} px)",
            f"tiles:    {t.n_tiles} ({t.y.n_tiles}x{t.x.n_tiles}) of {t.y.size}x{t.x.size} px, "
            f"stride {t.y.stride}x{t.x.stride}, merge {self.merge}",
            f"output:   {g.width}x{g.height} px x {self.info.num_features} bands {self.options.dtype}, "
            f"{self.out_bytes} bytes uncompressed, "
            f"{'one COG' if self.single_file else 'COG blocks + VRT'} "
            f"({t.y.n_blocks(t.block_size) * t.x.n_blocks(t.block_size)} blocks of "
            f"{t.block_size} px)",
            f"grid:     origin ({a.c:.6f}, {a.f:.6f}), pixel {a.a:.6g} x {-a.e:.6g}, "
            f"{CRS.from_wkt(g.crs).to_string()}",
            f"device:   {self.device} ({self.precision})",
        ])


READ_CPUS = 0.25      # read tasks are I/O-bound: a quarter CPU each
READ_RESERVE = 0.5    # CPUs the actor pool leaves to read tasks, or the pipeline starves


def actor_cpus(cpus: float, actors: int, on_gpu: bool) -> float:
    """Ray CPU resource per encoder actor.

    On CPU the torch thread count, not this number, decides how many cores an actor
    uses; the resource only has to let every actor *and* some read tasks be scheduled.
    An actor pool holding every CPU starves the reads and the pipeline hangs.
    """
    if on_gpu:
        return 1.0
    share = (cpus - READ_RESERVE) / actors
    if share < 0.05:
        raise InputError(f"--actors {actors} is too many for the {cpus:g} CPUs of this Ray cluster; "
                         f"use at most {int((cpus - READ_RESERVE) / 0.05)}.")
    return min(1.0, share)


def pool_shape(cpus: float, gpus: float, node_cpus: float, on_gpu: bool,
               actors: int | None, threads: int | None) -> tuple[int, int]:
    """Default (actors, torch threads per actor): one actor per GPU; on CPU small actors.

    Measured on 2 cores with vit_tiny: two 1-thread actors ran 25 % faster than one
    2-thread actor (OpenMP threads stall on each other when reads share the cores).
    """
    if on_gpu:
        return actors or max(1, int(gpus)), threads or 1
    threads = threads or max(1, min(4, int(node_cpus) // 4))
    return actors or max(1, int(cpus) // threads), threads


def estimate(plan: "EncodePlan", o: EncodeOptions, seconds: float = 3.0) -> str:
    """Encoder time from a short measured warm-up of the plan's model here (random weights,
    one actor's threads), scaled to the tiles and the default actor pool of this machine."""
    from ..bench import bare_forward

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if plan.device.startswith("cuda"):
        return "estimate: skipped for GPU plans (measure with a short run)"
    actors, threads = pool_shape(cpus, 0, cpus, False, o.actors, o.threads)
    rate = bare_forward("", 0, 0, plan.batch_size, threads, seconds=seconds, spec=plan.spec)
    total = plan.tiling.n_tiles / (rate * actors)
    return (f"estimate:  {rate:.1f} tiles/s per actor measured here ({threads} thread(s), batch "
            f"{plan.batch_size}); {actors} actor(s) on this machine's {cpus} CPUs -> ~{total:.0f} s of "
            "encoding, plus ~20 s start-up (more nodes/actors: proportionally less)")


READ_AHEAD_MIN = 512 * 2**20  # object-store bytes the encode dataset may hold, at least


@contextlib.contextmanager
def _dataset_settings(multi_node: bool, batch_bytes: int, actors: int):
    """Ray Data settings for the encode dataset, which copies the global context when it is
    created; restored afterwards, so later datasets in this process get the defaults.

    - Read-ahead is capped at a few batches per actor: by default Ray Data lets reads fill a
      share of the object store, so memory grew with raster area (measured x1.42 for 4x area).
    - Multi-node clusters: every encoder actor starts before work flows (else the first one up
      may take all of a short run), and each batch goes to the least busy actor rather than
      to the one on the node that read it (locality kept a whole CI run on one node when reads
      there outpaced its actor; a batch of tiles is small next to its forward pass).
    """
    import ray

    ctx = ray.data.DataContext.get_current()
    saved = ctx.wait_for_min_actors_s, ctx.execution_options
    options = copy.deepcopy(ctx.execution_options)
    options.resource_limits = ray.data.ExecutionResources.for_limits(
        object_store_memory=max(READ_AHEAD_MIN, 8 * actors * batch_bytes))
    with warnings.catch_warnings():
        # deprecated in Ray 2.60 without a replacement; Ray 2.64 (unsupported here) drops it
        warnings.simplefilter("ignore", DeprecationWarning)
        if multi_node:
            options.actor_locality_enabled = False
            ctx.wait_for_min_actors_s = 600
        ctx.execution_options = options
        try:
            yield
        finally:
            ctx.wait_for_min_actors_s, ctx.execution_options = saved


def unwrap_worker_error(exc: BaseException) -> BaseException:
    """The rayvit error a Ray worker raised (Ray wraps it), else ``exc`` itself."""
    seen = exc
    while seen is not None:
        cause = getattr(seen, "cause", None)
        if isinstance(seen, RayvitError):
            return seen
        if isinstance(cause, RayvitError):
            return cause
        seen = seen.__cause__ or cause
    return exc


def normalisation(o: EncodeOptions, mosaic: Mosaic, info: ModelInfo) -> tuple[tuple, tuple]:
    """Per-band mean/std the encoder applies: user values, model's (scaled), or sampled stats."""
    n = mosaic.count
    if o.mean is not None:
        if len(o.mean) != n or len(o.std) != n:
            raise InputError(f"--mean/--std need one value per band ({n} bands selected), got "
                             f"{len(o.mean)} and {len(o.std)}.")
        return tuple(map(float, o.mean)), tuple(map(float, o.std))
    if o.normalize == "none":
        return (0.0,) * n, (1.0,) * n
    if o.normalize == "model":
        dt = np.dtype(mosaic.dtype)
        scale = o.scale or (float(np.iinfo(dt).max) if dt.kind in "ui" else 1.0)
        mean = info.mean or (0.0,)
        std = info.std or (1.0,)
        # timm adapts in_chans by cycling the RGB filters; cycle mean/std the same way
        return (tuple(mean[i % len(mean)] * scale for i in range(n)),
                tuple(std[i % len(std)] * scale for i in range(n)))
    mean, std = band_statistics(mosaic, seed=o.seed)
    return tuple(map(float, mean)), tuple(map(float, std))


def plan_encode(inputs: Sequence[str], options: EncodeOptions) -> EncodePlan:
    """Validate options and inputs and derive the whole plan (reads metadata and samples only)."""
    from .encoder import resolve_device  # torch and timm: only where a model is built
    from .model import build_model, model_info

    o = options
    o.check()
    mosaic = open_mosaic(inputs, o.bands, o.crs, o.res, o.extent, o.extent_crs, o.s3_endpoint,
                         skip_bad_inputs=o.skip_bad_inputs)
    size = _pair(o.size)
    stride = _pair(o.stride if o.stride is not None else size)
    spec = ModelSpec(o.model, mosaic.count, size, o.pretrained, o.weights, o.layer, o.resize)
    device = resolve_device(o.device)
    info = model_info(build_model(spec), spec)
    footprint = info.footprint(spec)
    merge_method = o.merge or ("center" if stride != size else "first")
    tiling = Tiling.create(mosaic.grid.height, mosaic.grid.width, size, stride, footprint,
                           o.block_size, center=merge_method == "center")
    mean, std = normalisation(o, mosaic, info)
    precision = o.precision or device_defaults(device)[1]
    return EncodePlan(o, mosaic, spec, info, tiling, mosaic.grid.scaled(*footprint), mean, std,
                      merge_method, device, precision)


@dataclass
class EncodeResult:
    output: str | None
    outdir: str
    tiles: int
    tiles_encoded: int
    blocks_written: int
    blocks_resumed: int
    elapsed_s: float
    km2: float
    plan: EncodePlan = field(repr=False)
    first_batch_s: float = 0.0  # planning + Ray Data and actor start-up, until the first tiles
    tiles_per_node: dict = field(default_factory=dict)  # Ray node id -> tiles its actors encoded
    estimate: str = ""  # dry run: encoder time from a measured warm-up

    @property
    def tiles_per_s(self) -> float:
        return self.tiles_encoded / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        resumed = f", {self.blocks_resumed} blocks resumed" if self.blocks_resumed else ""
        split = sorted(self.tiles_per_node.values(), reverse=True)
        nodes = f" on {len(split)} Ray node(s)" if split else ""
        if len(split) > 1:
            nodes += f" ({' + '.join(map(str, split))} tiles)"
        return (f"encoded {self.tiles_encoded}/{self.tiles} tiles, {self.km2:.2f} km2 in "
                f"{self.elapsed_s:.1f} s ({self.tiles_per_s:.1f} tiles/s){nodes}{resumed} -> {self.output}")


class _Progress:
    def __init__(self, total: int, enabled: bool, label: str = "encode"):
        self.total, self.enabled, self.label = total, enabled, label
        self.start = self.last = time.monotonic()
        self.done = 0

    def update(self, n: int, blocks: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last > 2 or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"{self.label}: {self.done}/{self.total} tiles ({100 * self.done / max(self.total, 1):.0f}%), "
                  f"{rate:.1f} tiles/s, {blocks} blocks written, eta {eta:.0f} s",
                  file=sys.stderr, flush=True)


class _BlockAccumulator:
    """Collects tile contributions per unfinished block; merges a block once it is complete."""

    def __init__(self, plan: EncodePlan, finished: set, on_block: Callable[[Block, np.ndarray, np.ndarray], None]):
        self.plan, self.finished, self.on_block = plan, finished, on_block
        self.pending: dict[tuple[int, int], list[Contribution]] = {}
        self.written = 0

    def add(self, iy: int, ix: int, features: np.ndarray, fvalid: np.ndarray) -> None:
        t = self.plan.tiling
        r0, r1, c0, c1 = t.tile_span(iy, ix)
        ty, tx = t.y.feature_offset(iy), t.x.feature_offset(ix)
        rank = t.tile_index(iy, ix)
        for key in t.tile_blocks(iy, ix):
            if key in self.finished:
                continue
            b = t.block(*key)
            y0, y1 = max(r0, b.row), min(r1, b.row + b.rows)
            x0, x1 = max(c0, b.col), min(c1, b.col + b.cols)
            self.pending.setdefault(key, []).append(Contribution(
                rank, y0 - b.row, x0 - b.col,
                np.ascontiguousarray(features[:, y0 - ty:y1 - ty, x0 - tx:x1 - tx]),
                np.ascontiguousarray(fvalid[y0 - ty:y1 - ty, x0 - tx:x1 - tx])))
            if len(self.pending[key]) == t.expected_tiles(b):
                contributions = self.pending.pop(key)
                data, valid = merge((self.plan.info.num_features, b.rows, b.cols), contributions,
                                    self.plan.merge)
                self.on_block(b, data, valid)
                self.finished.add(key)
                self.written += 1


def encode(inputs: str | Sequence[str], output: str, options: EncodeOptions | None = None,
           **kwargs) -> EncodeResult:
    """Encode raster(s) into a georeferenced ViT feature raster in directory ``output``.

    ``rayvit.encode(["a.tif", "b.tif"], "out/", model="vit_small_patch14_reg4_dinov2",
    size=448, stride=224)``; keyword arguments are :class:`EncodeOptions` fields.
    """
    import ray

    from ..runtime import cluster_resources, init_ray
    from .encoder import Encoder

    t0 = time.monotonic()
    options = options or EncodeOptions(**kwargs)
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    plan = plan_encode(inputs, options)
    o = options
    km2 = plan.mosaic.grid.area_km2()
    if o.dry_run:
        result = EncodeResult(None, output, plan.tiling.n_tiles, 0, 0, 0, 0.0, km2, plan)
        result.estimate = estimate(plan, o)
        return result

    d = plan.info.num_features
    writer = FeatureWriter(output, plan.feature_grid, d, [f"feature_{i + 1:04d}" for i in range(d)],
                           o.dtype, o.compress)
    fingerprint = plan.fingerprint()
    state = writer.check(fingerprint, o.overwrite)
    if state == "complete":
        print(f"encode: {output} already holds this run (run id {fingerprint}); nothing to do.",
              file=sys.stderr)
        return EncodeResult(writer.url("features.json"), output, plan.tiling.n_tiles, 0, 0, 0,
                            time.monotonic() - t0, km2, plan)
    writer.start(fingerprint, plan.config(), overwrite=state == "overwrite")
    finished_data = writer.finished_blocks() if state == "resume" else {}
    resumed = len(finished_data)
    finished = set(finished_data)
    t = plan.tiling
    for b in t.blocks():  # blocks no tile touches hold nodata only: nothing to compute
        if t.expected_tiles(b) == 0:
            finished.add((b.by, b.bx))

    source = TileDatasource(plan.mosaic, t, frozenset(finished), plan.batch_size)
    todo = source.n_tiles
    init_ray(o.address)
    cpus, gpus, node_cpus = cluster_resources()
    on_gpu = plan.device.startswith("cuda")
    actors, threads = pool_shape(cpus, gpus, node_cpus, on_gpu, o.actors, o.threads)
    batch_size = plan.batch_size

    progress = _Progress(todo, o.progress)
    first_batch = 0.0
    acc = _BlockAccumulator(plan, finished, writer.write_block)
    nodes: dict[str, int] = {}
    if todo:
        multi_node = sum(1 for n in ray.nodes() if n.get("Alive")) > 1
        batch_bytes = batch_size * (source.tile_bytes() + plan.tile_feature_bytes)
        with _dataset_settings(multi_node, batch_bytes, actors):
            # Ray 2.60 deprecates ray_remote_args but has no named parameter for the strategy
            ds = ray.data.read_datasource(source, num_cpus=READ_CPUS,
                                          override_num_blocks=source.n_tasks).map_batches(
                Encoder,
                fn_constructor_kwargs=dict(spec=plan.spec.to_dict(), mean=plan.mean, std=plan.std,
                                           device=plan.device, precision=plan.precision,
                                           threads=None if on_gpu else threads, model_batch=batch_size),
                batch_size=batch_size,
                # two batches queued per actor: enough to hide dispatch, few enough that no
                # actor holds a backlog while another idles at the end (1: no faster in a trace)
                compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
                num_gpus=1 if on_gpu else 0,
                num_cpus=actor_cpus(cpus, actors, on_gpu),
                # spread encoder actors over the nodes (the default packs them onto few)
                scheduling_strategy="SPREAD",
            )
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
                first_batch = first_batch or time.monotonic() - t0
                for i in range(len(batch["iy"])):
                    acc.add(int(batch["iy"][i]), int(batch["ix"][i]), batch["features"][i],
                            batch["fvalid"][i])
                progress.update(len(batch["iy"]), acc.written)
                for node in batch["node"]:
                    nodes[str(node)] = nodes.get(str(node), 0) + 1
        except Exception as exc:
            raise unwrap_worker_error(exc) from exc
    if acc.pending:
        raise RuntimeError(f"internal error: {len(acc.pending)} blocks did not receive all their tiles; "
                           "the output was not committed.")
    with_data = [t.block(*k) for k, has in sorted(writer.finished_blocks().items()) if has]
    if not with_data:
        raise InputError(f"no valid pixel in {inputs[0]!r} ... over the requested extent: "
                         "nothing to encode.")
    sidecar = {
        "rayvit_version": __version__, "run_id": fingerprint,
        "inputs": [s.url for s in plan.mosaic.sources],
        "skipped_inputs": list(plan.mosaic.skipped),
        "model": plan.spec.name, "pretrained": plan.spec.pretrained, "weights": plan.spec.weights,
        "weights_sha256": plan.info.weights_sha256, "layer": plan.info.layer,
        "n_layers": plan.info.n_layers, "num_features": d,
        "normalization": {"mode": "user" if o.mean is not None else o.normalize,
                          "mean": list(plan.mean), "std": list(plan.std)},
        "bands": list(plan.mosaic.bands), "size": [t.y.size, t.x.size],
        "stride": [t.y.stride, t.x.stride], "resize": plan.spec.resize,
        "patch_footprint": [t.y.footprint, t.x.footprint], "merge": plan.merge,
        "crs": plan.feature_grid.crs, "transform": list(plan.feature_grid.transform),
        "width": plan.feature_grid.width, "height": plan.feature_grid.height,
        "dtype": o.dtype, "nodata": "nan", "precision": plan.precision,
        "input_grid": {"transform": list(plan.mosaic.grid.transform),
                       "width": plan.mosaic.grid.width, "height": plan.mosaic.grid.height},
        "tiles": t.n_tiles,
    }
    final = writer.commit(with_data, plan.single_file, sidecar)
    writer.publish()
    final = writer.url(os.path.basename(final))
    return EncodeResult(final, output, t.n_tiles, todo, acc.written, resumed,
                        time.monotonic() - t0, km2, plan, first_batch, nodes)
