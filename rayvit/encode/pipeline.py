"""``encode``: plan -> read stage -> device stage -> write stage -> commit.

The driver plans (metadata only), streams block tasks through Ray and commits: read tasks
read each block's input window (:mod:`.stages.read`), device actors that outlive one encode
encode and merge it on the device (:mod:`.stages.device`), write tasks write the block's COG
(:mod:`.stages.write`). The driver receives one small record per block, appends it to the
manifest and, once every block is there, writes the VRT or the single COG and the sidecar.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
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
PER_ACTOR = 2       # blocks queued per actor: the next block's window is read while this one encodes
TRIES = 3           # attempts per block when a node, an actor or an object is lost
STAGE_SECONDS = ("read_s", "device_s", "write_s", "model_load_s")  # measured per block in the stages


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
    first_batch_s: float = 0.0  # planning + worker and actor start-up, until the first block is written
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




def _lost(exc: BaseException) -> tuple[bool, bool]:
    """``(the cluster lost something, an actor died)``: a block whose read, encode or write
    failed for the cluster's reasons (a node, worker, actor or object lost) is retried; one
    that failed for its data's reasons is not."""
    import ray.exceptions as rx

    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = getattr(seen, "cause", None) or seen.__cause__
    actor = any(isinstance(e, rx.RayActorError) for e in chain)
    lost = actor or any(isinstance(e, (rx.ObjectLostError, rx.WorkerCrashedError, rx.NodeDiedError)) for e in chain)
    return lost, actor


def stream_blocks(plan: EncodePlan, tasks: list, writer: FeatureWriter, cpus: float, gpus: float,
                  node_cpus: float, preview=None, previews: dict | None = None) -> Iterator[dict]:
    """Run the block tasks through read -> device -> write; yield each block's record.

    Per block: a read task, a call to the least busy device actor with the read's result (an
    object reference: the window goes from the reader to the actor without the driver), a
    write task with the actor's result. At most :data:`PER_ACTOR` blocks wait per actor and
    one write per CPU runs, so memory stays bounded whatever the area. A block that fails
    because the cluster lost something is run again (:data:`TRIES` attempts); an actor that
    died leaves the pool and the others take its blocks. With ``preview``, each read task
    also samples its block's part of the input imagery view, and ``previews[(by, bx)]`` gets
    its object reference.
    """
    import ray

    from .stages.pool import DeviceConfig, device_pool
    from .stages.read import read_block
    from .stages.write import write_block

    o, t = plan.options, plan.tiling
    on_gpu = plan.device.startswith("cuda")
    size, threads = pool_shape(cpus, gpus, node_cpus, on_gpu, o.actors, o.threads)
    pool = device_pool(size, actor_cpus(cpus, size, on_gpu), 1 if on_gpu else 0, None if on_gpu else threads)
    config = ray.put(DeviceConfig(plan.spec, t, plan.mean, plan.std, plan.merge, o.dtype, plan.device,
                                  plan.precision, plan.batch_size, plan.info.weights_sha256))
    block_writer = ray.put(writer.block_writer())
    read = ray.remote(read_block).options(num_cpus=READ_CPUS, num_returns=2)
    preview = ray.put(preview) if preview else None
    write = ray.remote(write_block).options(num_cpus=WRITE_CPUS)
    write_slots = max(1, min(int(cpus), len(tasks)))
    todo = deque((task, 1) for task in tasks)
    load = {actor: 0 for actor in pool.take(len(tasks))}
    encoding: dict = {}    # actor call -> (task, attempt, actor)
    encoded: deque = deque()
    writing: dict = {}     # write task -> (task, attempt, actor)
    try:
        while todo or encoding or encoded or writing:
            while todo and load and min(load.values()) < PER_ACTOR and len(encoded) + len(writing) <= write_slots:
                actor = min(load, key=load.get)
                task, attempt = todo.popleft()
                window, part = read.remote(plan.mosaic.subset(*task.window), t, task, preview)  # its few sources only
                if previews is not None:
                    previews[task.block.by, task.block.bx] = part
                call = actor.encode.remote(config, task.block.by, task.block.bx, window)
                encoding[call], load[actor] = (task, attempt, actor), load[actor] + 1
            while encoded and len(writing) < write_slots:
                call, job = encoded.popleft()
                writing[write.remote(block_writer, t, call)] = job
            (done,), _ = ray.wait([*encoding, *writing], num_returns=1)
            if done in encoding:
                job = encoding.pop(done)
                if job[2] in load:
                    load[job[2]] -= 1
                encoded.append((done, job))
                continue
            task, attempt, actor = writing.pop(done)
            try:
                record = ray.get(done)
            except ray.exceptions.RayError as exc:
                lost, died = _lost(exc)
                if not lost or attempt >= TRIES:
                    raise
                if died and actor in load:
                    del load[actor]
                    pool.drop(actor)
                if not load:            # no actor left: start one where the cluster has room
                    load = {actor: 0 for actor in pool.take(1)}
                todo.appendleft((task, attempt + 1))
                continue
            yield record
    except Exception as exc:
        raise unwrap_worker_error(exc) from exc
    finally:
        for ref in [*encoding, *(call for call, _ in encoded), *writing]:
            with contextlib.suppress(Exception):
                ray.cancel(ref)


def imagery_preview(plan: EncodePlan):
    """What the read tasks sample for the report's input imagery view (red, green, blue by
    the first file's colour interpretation where they were read, else the first three bands
    read), or None when the first input cannot say (e.g. a STAC item)."""
    from ..report.quicklook import rgb_bands, view_grid
    from .stages.read import Preview

    bands = list(plan.mosaic.bands)
    try:
        rgb = rgb_bands(plan.mosaic.sources[0].url, bands)
    except Exception:       # the report reads the inputs, or says why it cannot
        return None
    g = plan.feature_grid
    view, h, w = view_grid(g.transform, g.width, g.height)
    return Preview(tuple(view)[:6], h, w, tuple(g.transform), tuple(plan.mosaic.grid.transform),
                   tuple(bands.index(b) for b in rgb))


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
    from ..runtime import cluster_resources, init_ray

    t0 = time.monotonic()
    o = options or EncodeOptions(**kwargs)
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    timings: dict[str, float] = {}
    plan = plan_encode(inputs, o)     # embedded Ray: this machine's GPUs decide the device
    if o.address or os.environ.get("RAY_ADDRESS"):
        t1 = time.monotonic()
        init_ray(o.address, keep="encoders")   # a cluster: its GPUs decide, not the driver's
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
    config = plan.config()
    fingerprint = plan.fingerprint(config)
    state = writer.check(fingerprint, o.overwrite)
    if state == "complete":
        print(f"encode: {output} already holds this run (run id {fingerprint}); nothing to do.",
              file=sys.stderr)
        return EncodeResult(writer.url("features.json"), output, t.n_tiles, 0, 0, 0,
                            time.monotonic() - t0, km2, plan)
    writer.start(fingerprint, config, overwrite=state == "overwrite")
    finished = writer.finished_blocks() if state == "resume" else {}
    tasks = plan.block_tasks(frozenset(finished))
    timings["planning_s"] = time.monotonic() - t0 - timings.get("ray_start_s", 0.0)
    t1 = time.monotonic()
    init_ray(o.address, keep="encoders")
    writer.check_reachable()
    cpus, gpus, node_cpus = cluster_resources()
    timings["ray_start_s"] = timings.get("ray_start_s", 0.0) + time.monotonic() - t1
    todo = sum(task.n_tiles for task in tasks)
    first_batch, first_tiles, written = 0.0, 0, 0
    nodes: dict[str, int] = {}
    sums = dict.fromkeys(STAGE_SECONDS, 0.0)
    t1 = time.monotonic()
    # a resumed run has no preview of the blocks read before: its report reads the inputs
    preview, previews = (None if finished else imagery_preview(plan)), {}
    if tasks:
        with Progress(todo, "encode", "tile", o.progress) as progress:
            for record in stream_blocks(plan, tasks, writer, cpus, gpus, node_cpus, preview, previews):
                tiles, node = record.pop("tiles"), record.pop("node")
                seconds = {key: record.pop(key) for key in STAGE_SECONDS}
                if not first_batch:
                    first_batch, first_tiles = time.monotonic() - t0, tiles
                    # until the first block is through: worker and actor start-up
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
    imagery = None
    if preview:
        import ray
        with contextlib.suppress(ray.exceptions.RayError):
            imagery = preview.assemble(ray.get(list(previews.values())))
    report.write(writer.outdir, "features", raster=writer.readable(final), imagery=imagery)
    writer.publish()
    return EncodeResult(writer.url(os.path.basename(final)), output, t.n_tiles, todo, written, len(finished),
                        timings["total_s"], km2, plan, first_batch, nodes, first_block_tiles=first_tiles,
                        timings=timings)
