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
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from .. import __version__
from ..errors import InputError
from ..io.writer import FeatureWriter
from .plan import (READ_CPUS, EncodeOptions, EncodePlan, actor_cpus, choose_device, estimate, plan_encode,
                   pool_shape, unwrap_worker_error)

# Write tasks reserve no CPU, at most one per CPU at once: with a reservation they waited
# behind read-ahead for the CPU share the actors leave (the first block was written after
# 60 s of a 137-s run, 4096 tiles on 2 CPUs) and the actors then idled at the end.
WRITE_CPUS = 0
READ_AHEAD_MIN = 512 * 2**20  # object-store bytes the encode dataset may hold, at least


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
    out_bytes = plan.info.num_features * t.block_size ** 2 * (2 if o.dtype == "float16" else 4)
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
                            batch_size=1, num_cpus=WRITE_CPUS, concurrency=max(1, int(cpus)))
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            for record, tiles, node in zip(batch["record"], batch["tiles"], batch["node"]):
                yield json.loads(record) | {"tiles": int(tiles), "node": str(node)}
    except Exception as exc:
        raise unwrap_worker_error(exc) from exc


def encode(inputs: str | Sequence[str], output: str, options: EncodeOptions | None = None,
           **kwargs) -> EncodeResult:
    """Encode raster(s) into a georeferenced ViT feature raster in directory ``output``.

    ``rayvit.encode(["a.tif", "b.tif"], "out/", model="vit_small_patch14_reg4_dinov2",
    size=448, stride=224)``; keyword arguments are :class:`EncodeOptions` fields.
    """
    import ray

    from ..runtime import cluster_resources, init_ray

    t0 = time.monotonic()
    o = options or EncodeOptions(**kwargs)
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    plan = plan_encode(inputs, o)     # embedded Ray: this machine's GPUs decide the device
    if o.address or os.environ.get("RAY_ADDRESS"):
        init_ray(o.address)           # a cluster: its GPUs decide, not the driver's
        plan = plan.on_device(choose_device(o.device, cluster_resources()[1]))
    km2 = plan.mosaic.grid.area_km2()
    t = plan.tiling
    if o.dry_run:
        result = EncodeResult(None, output, t.n_tiles, 0, 0, 0, 0.0, km2, plan)
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
        return EncodeResult(writer.url("features.json"), output, t.n_tiles, 0, 0, 0,
                            time.monotonic() - t0, km2, plan)
    writer.start(fingerprint, plan.config(), overwrite=state == "overwrite")
    finished = writer.finished_blocks() if state == "resume" else {}
    tasks = plan.block_tasks(frozenset(finished))
    init_ray(o.address)
    writer.check_reachable()
    cpus, gpus, node_cpus = cluster_resources()
    todo = sum(task.n_tiles for task in tasks)
    progress = _Progress(todo, o.progress)
    first_batch, first_tiles, written = 0.0, 0, 0
    nodes: dict[str, int] = {}
    if tasks:
        multi_node = sum(1 for n in ray.nodes() if n.get("Alive")) > 1
        for record in stream_blocks(plan, tasks, writer, cpus, gpus, node_cpus, multi_node):
            tiles, node = record.pop("tiles"), record.pop("node")
            if not first_batch:
                first_batch, first_tiles = time.monotonic() - t0, tiles
            writer.record([record])
            written += 1
            nodes[node] = nodes.get(node, 0) + tiles
            progress.update(tiles, written)
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
    return EncodeResult(final, output, t.n_tiles, todo, written, len(finished),
                        time.monotonic() - t0, km2, plan, first_batch, nodes, first_block_tiles=first_tiles)
