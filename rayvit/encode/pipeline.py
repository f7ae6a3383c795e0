"""``encode``: plan -> read stage -> device stage -> write stage -> commit.

The driver plans (metadata only), streams block tasks through Ray Data and commits: read
tasks read each block's input window (:mod:`.stages.read`), an actor pool encodes and
merges it on the device (:mod:`.stages.device`), write tasks write the block's COG
(:mod:`.stages.write`). The driver receives one small record per block, appends it to the
manifest and, once every block is there, writes the VRT or the single COG and the sidecar.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

from .. import __version__
from ..errors import InputError
from .. import report
from ..console import Progress
from ..io import quantize, storage
from ..io.writer import FeatureWriter
from .plan import (READ_CPUS, EncodeOptions, EncodePlan, actor_cpus, choose_device, estimate, plan_encode,
                   pool_shape, stac_sources, unwrap_worker_error)

# Write tasks reserve no CPU, at most one per CPU at once: with a reservation they waited
# behind read-ahead for the CPU share the actors leave (the first block was written after
# 60 s of a 137-s run, 4096 tiles on 2 CPUs) and the actors then idled at the end.
WRITE_CPUS = 0
READ_AHEAD_MIN = 512 * 2**20  # object-store bytes the encode dataset may hold, at least
STAGE_SECONDS = ("read_s", "device_s", "write_s", "model_load_s")  # measured per block in the stages


@contextlib.contextmanager
def _dataset_settings(multi_node: bool, task_bytes: int, actors: int):
    """Ray Data settings for the encode dataset, which copies the global context when it is
    created; restored afterwards, so later datasets in this process get the defaults.

    - Read-ahead is capped at a few block tasks per actor (window + features): by default Ray
      Data lets reads fill a share of the object store, so memory grew with raster area
      (measured x1.42 for 4x area).
    - Multi-node clusters: every encoder actor starts before work flows (else the first one up
      may take all of a short run), and each batch goes to the least busy actor rather than
      to the one on the node that read it (locality kept a whole CI run on one node when reads
      there outpaced its actor; a block's window is small next to its forward passes).
    """
    import ray

    ctx = ray.data.DataContext.get_current()
    saved = ctx.wait_for_min_actors_s, ctx.execution_options
    options = copy.deepcopy(ctx.execution_options)
    options.resource_limits = ray.data.ExecutionResources.for_limits(
        object_store_memory=max(READ_AHEAD_MIN, 3 * actors * task_bytes))
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
    first_batch_s: float = 0.0  # planning + Ray Data and actor start-up, until the first block is written
    tiles_per_node: dict = field(default_factory=dict)  # Ray node id -> tiles its actors encoded
    estimate: str = ""  # dry run: encoder time from a measured warm-up
    first_block_tiles: int = 0
    timings: dict = field(default_factory=dict)  # see encode(): wall phases and stage sums, seconds

    @property
    def tiles_per_s(self) -> float:
        return self.tiles_encoded / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        resumed = f", {self.blocks_resumed} blocks resumed" if self.blocks_resumed else ""
        split = sorted(self.tiles_per_node.values(), reverse=True)
        nodes = f" on {len(split)} Ray node(s)" if split else ""
        if len(split) > 1:
            nodes += f" ({' + '.join(map(str, split))} tiles)"
        extra = self.plan.tiling.redundancy()
        shared = f" (incl. {100 * extra:.0f} % re-encoded: tiles that straddle blocks)" if extra > 0 else ""
        return (f"encoded {self.tiles_encoded}/{self.tiles} tiles{shared}, {self.km2:.2f} km2 in "
                f"{self.elapsed_s:.1f} s ({self.tiles_per_s:.1f} tiles/s){nodes}{resumed} -> {self.output}"
                + (f"\ntime: {timing_line(self.timings)}" if self.timings else ""))


PHASES = (("planning_s", "planning"), ("ray_start_s", "Ray start"), ("actor_start_s", "actor start"),
          ("encoding_s", "encoding"), ("writing_s", "writing"), ("commit_s", "commit"))


def timing_line(timings: dict) -> str:
    """``planning 0.4 s, Ray start 2.9 s, ...`` (writing: write-task seconds, which overlap
    encoding)."""
    parts = [f"{label} {timings[key]:.1f} s" for key, label in PHASES if key in timings]
    return ", ".join(parts) + " (writing runs in parallel with encoding)"




def stream_blocks(plan: EncodePlan, tasks: list, writer: FeatureWriter, cpus: float, gpus: float,
                  node_cpus: float, multi_node: bool) -> Iterator[dict]:
    """Run the block tasks through read -> device -> write; yield each block's record."""
    import ray

    from .stages.device import DeviceConfig, DeviceStage
    from .stages.read import BlockDatasource
    from .stages.write import write_blocks

    o = plan.options
    on_gpu = plan.device.startswith("cuda")
    actors, threads = pool_shape(cpus, gpus, node_cpus, on_gpu, o.actors, o.threads)
    actors = min(actors, len(tasks))   # an actor without a block would only import torch
    source = BlockDatasource(plan.mosaic, plan.tiling, tasks)
    config = DeviceConfig(plan.spec, plan.tiling, plan.mean, plan.std, plan.merge, o.dtype, plan.device,
                          plan.precision, plan.batch_size, None if on_gpu else threads)
    t = plan.tiling
    out_bytes = plan.info.num_features * t.block_size ** 2 * (2 if o.dtype == "float16" else 4)  # int8: float32 until commit
    task_bytes = max(map(source.window_bytes, tasks)) + out_bytes
    with _dataset_settings(multi_node, task_bytes, actors):
        # Ray 2.60 deprecates ray_remote_args but has no named parameter for the strategy
        ds = ray.data.read_datasource(source, num_cpus=READ_CPUS, override_num_blocks=len(tasks))
        ds = ds.map_batches(
            DeviceStage, fn_constructor_kwargs={"config": config}, batch_size=1,
            # two blocks queued per actor: the next block's window is read while this one encodes
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
            num_gpus=1 if on_gpu else 0, num_cpus=actor_cpus(cpus, actors, on_gpu),
            # spread encoder actors over the nodes (the default packs them onto few)
            scheduling_strategy="SPREAD")
        ds = ds.map_batches(write_blocks, fn_kwargs={"writer": writer.block_writer(), "tiling": t},
                            batch_size=1, num_cpus=WRITE_CPUS, concurrency=max(1, min(int(cpus), len(tasks))))
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            for k, record in enumerate(batch["record"]):
                yield json.loads(record) | {"tiles": int(batch["tiles"][k]), "node": str(batch["node"][k]),
                                            **{key: float(batch[key][k]) for key in STAGE_SECONDS}}
    except Exception as exc:
        raise unwrap_worker_error(exc) from exc


def stac_record(plan: EncodePlan) -> dict:
    """``{"stac": ...}`` for the sidecar of a STAC run (items, dates, assets and their
    resolution, which were warped), else {}."""
    from ..io import stac

    items = [s for s in plan.mosaic.sources if s.item]
    if not items:
        return {}
    o = plan.options
    return {"stac": {"source": storage.redact(o.stac or ""), "assets": list(o.assets or ()),
                     "composite": None if o.by_date or o.grid else (o.composite or "least-cloudy"),
                     "target_res": plan.mosaic.grid.res[0], "resampling": "nearest",
                     "items": stac.record(items, plan.mosaic.grid)}}


def encode_dates(output: str, options: EncodeOptions | None = None, **kwargs) -> dict[str, "EncodeResult"]:
    """``--stac ... --by-date``: one product per date in ``output/YYYY-MM-DD/``, all on one
    grid (the union of every date's items), ready for ``rayvit change``."""
    from ..io import stac
    from ..io.mosaic import target_grid

    o = options or EncodeOptions(**kwargs)
    o.check()
    sources = stac_sources(o)
    grid = o.grid or target_grid(sources, o.crs, o.res, o.extent, o.extent_crs)
    results = {}
    for date, group in stac.by_date(sources).items():
        one = replace(o, by_date=False, composite=None, grid=grid)
        results[date] = encode(stac.order(group, "least-cloudy"), storage.join(str(output), date), one)
    return results


def encode(inputs: str | Sequence[str] = (), output: str | None = None, options: EncodeOptions | None = None,
           **kwargs) -> EncodeResult:
    """Encode raster(s) into a georeferenced ViT feature raster in directory ``output``.

    ``rayvit.encode(["a.tif", "b.tif"], "out/", model="vit_small_patch14_reg4_dinov2",
    size=448, stride=224)``; keyword arguments are :class:`EncodeOptions` fields. With
    ``stac=SOURCE, assets=[...]`` (and no inputs) the mosaic is the STAC items'.
    """
    if output is None:
        raise InputError("encode needs an output directory (output=...).")
    if (options.by_date if options else kwargs.get("by_date")):
        raise InputError("by_date writes one product per date: call rayvit.encode_dates(output, ...) "
                         "(the CLI's encode --by-date).")
    import ray

    from ..runtime import cluster_resources, init_ray

    t0 = time.monotonic()
    o = options or EncodeOptions(**kwargs)
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    timings: dict[str, float] = {}
    plan = plan_encode(inputs, o)     # embedded Ray: this machine's GPUs decide the device
    if o.address or os.environ.get("RAY_ADDRESS"):
        t1 = time.monotonic()
        init_ray(o.address)           # a cluster: its GPUs decide, not the driver's
        timings["ray_start_s"] = time.monotonic() - t1
        plan = plan.on_device(choose_device(o.device, cluster_resources()[1]))
    km2 = plan.mosaic.grid.area_km2()
    t = plan.tiling
    if o.dry_run:
        result = EncodeResult(None, output, t.n_tiles, 0, 0, 0, 0.0, km2, plan)
        result.estimate = estimate(plan, o)
        return result

    d = plan.info.num_features
    writer = FeatureWriter(output, plan.feature_grid, d, [f"feature_{i + 1:04d}" for i in range(d)],
                           o.dtype, o.compress, quantized=quantize.is_quantized(o.dtype))
    fingerprint = plan.fingerprint()
    state = writer.check(fingerprint, o.overwrite)
    if state == "complete":
        print(f"encode: {output} already holds this run (run id {fingerprint}); nothing to do.",
              file=sys.stderr)
        return EncodeResult(writer.url("features.json"), output, t.n_tiles, 0, 0, 0,
                            time.monotonic() - t0, km2, plan)
    writer.start(fingerprint, plan.config(), overwrite=state == "overwrite")
    finished = writer.finished_blocks() if state == "resume" else {}
    tasks = plan.block_tasks(frozenset(finished))
    timings["planning_s"] = time.monotonic() - t0 - timings.get("ray_start_s", 0.0)
    t1 = time.monotonic()
    init_ray(o.address)
    writer.check_reachable()
    cpus, gpus, node_cpus = cluster_resources()
    timings["ray_start_s"] = timings.get("ray_start_s", 0.0) + time.monotonic() - t1
    todo = sum(task.n_tiles for task in tasks)
    first_batch, first_tiles, written = 0.0, 0, 0
    nodes: dict[str, int] = {}
    sums = dict.fromkeys(STAGE_SECONDS, 0.0)
    t1 = time.monotonic()
    if tasks:
        multi_node = sum(1 for n in ray.nodes() if n.get("Alive")) > 1
        with Progress(todo, "encode", "tile", o.progress) as progress:
            for record in stream_blocks(plan, tasks, writer, cpus, gpus, node_cpus, multi_node):
                tiles, node = record.pop("tiles"), record.pop("node")
                seconds = {key: record.pop(key) for key in STAGE_SECONDS}
                if not first_batch:
                    first_batch, first_tiles = time.monotonic() - t0, tiles
                    # until the first block is through: Ray Data, worker and actor start-up
                    timings["actor_start_s"] = max(0.0, time.monotonic() - t1 - seconds["read_s"]
                                                   - seconds["device_s"] - seconds["write_s"])
                for key in STAGE_SECONDS:
                    sums[key] = max(sums[key], seconds[key]) if key == "model_load_s" else sums[key] + seconds[key]
                writer.record([record])
                written += 1
                nodes[node] = nodes.get(node, 0) + tiles
                progress.update(tiles, f"{written}/{len(tasks)} blocks")
    timings["encoding_s"] = time.monotonic() - t1 - timings.get("actor_start_s", 0.0)
    timings["writing_s"] = sums["write_s"]
    timings["stage_sums_s"] = {"read": sums["read_s"], "device": sums["device_s"], "write": sums["write_s"],
                               "model_load_max": sums["model_load_s"]}
    t1 = time.monotonic()
    done = writer.finished_blocks()
    missing = [task.block.name for task in plan.block_tasks() if (task.block.by, task.block.bx) not in done]
    if missing:
        raise RuntimeError(f"internal error: {len(missing)} blocks were not written ({missing[0]}, ...); "
                           "the output was not committed.")
    with_data = [t.block(*k) for k, has in sorted(done.items()) if has]
    if not with_data:
        raise InputError(f"no valid pixel in {inputs[0]!r} ... over the requested extent: "
                         "nothing to encode.")
    sidecar = {
        "rayvit_version": __version__, "run_id": fingerprint,
        "inputs": [storage.redact(s.url) for s in plan.mosaic.sources],
        **stac_record(plan),
        "skipped_inputs": list(plan.mosaic.skipped),
        "model": plan.spec.name, "pretrained": plan.spec.pretrained, "weights": plan.spec.weights,
        "weights_sha256": plan.info.weights_sha256, "layer": plan.info.layer,
        "n_layers": plan.info.n_layers, "num_features": d,
        "preset": plan.spec.preset, "band_map": list(plan.band_map), "band_fill": o.band_fill,
        "normalization": {"mode": plan.normalize,
                          "mean": list(plan.mean), "std": list(plan.std)},
        "bands": list(plan.mosaic.bands), "size": [t.y.size, t.x.size],
        "stride": [t.y.stride, t.x.stride], "resize": plan.spec.resize,
        "patch_footprint": [t.y.footprint, t.x.footprint], "merge": plan.merge,
        "crs": plan.feature_grid.crs, "transform": list(plan.feature_grid.transform),
        "width": plan.feature_grid.width, "height": plan.feature_grid.height,
        "dtype": o.dtype, "nodata": str(writer.nodata), "precision": plan.precision,
        "input_grid": {"transform": list(plan.mosaic.grid.transform),
                       "width": plan.mosaic.grid.width, "height": plan.mosaic.grid.height},
        "tiles": t.n_tiles, "blocks": len(plan.block_tasks()), "block_size": t.block_size,
        "device": plan.device, "batch_size": plan.batch_size,
    }

    def finish() -> dict:       # the sidecar, written after the product is assembled
        timings["commit_s"] = time.monotonic() - t1
        timings["total_s"] = time.monotonic() - t0
        # what this run did (a resumed run encodes fewer tiles): the rest of the sidecar is
        # identical for every run that writes this product
        return dict(sidecar, timings=dict(timings, tiles_encoded=todo, tiles_per_s=todo / timings["total_s"],
                                          nodes=len(nodes)))

    final = writer.commit(with_data, plan.single_file, finish)
    report.write(writer.outdir, "features", raster=writer.readable(final))
    writer.publish()
    return EncodeResult(writer.url(os.path.basename(final)), output, t.n_tiles, todo, written, len(finished),
                        timings["total_s"], km2, plan, first_batch, nodes, first_block_tiles=first_tiles,
                        timings=timings)
