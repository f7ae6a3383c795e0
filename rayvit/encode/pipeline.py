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

from ..version import __version__
from ..errors import InputError
from .. import report
from ..console import Progress
from ..io import quantize, storage
from ..io.writer import ProductWriter
from .plan import (READ_CPUS, EncodeOptions, EncodePlan, actor_cpus, choose_device, estimate, plan_encode,
                   pool_shape, queue_depth, stac_sources, unwrap_worker_error)

# Write tasks reserve no CPU, at most one per CPU at once: with a reservation they waited
# behind read-ahead for the CPU share the actors leave (the first block was written after
# 60 s of a 137-s run, 4096 tiles on 2 CPUs) and the actors then idled at the end.
WRITE_CPUS = 0
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


def stream_blocks(plan: EncodePlan, tasks: list, writer: ProductWriter, cpus: float, gpus: float,
                  node_cpus: float, preview=None, previews: dict | None = None, sample=None) -> Iterator[dict]:
    """Run the block tasks through read -> device -> write; yield each block's record.

    Per block: a read task, a call to the least busy device actor with the read's result (an
    object reference: the window goes from the reader to the actor without the driver), a
    write task with the actor's result. At most :func:`.plan.queue_depth` blocks wait per actor and
    one write per CPU runs, so memory stays bounded whatever the area. A block that fails
    because the cluster lost something is run again (:data:`TRIES` attempts); an actor that
    died leaves the pool and the others take its blocks. With ``preview``, each read task
    also samples its block's part of the input imagery view, and ``previews[(by, bx)]`` gets
    its object reference. With ``sample`` (:class:`.stages.write.FeatureSample`), each
    record carries its block's part of the report's view of the features.
    """
    import ray

    from .stages.pool import DeviceConfig, device_pool
    from .stages.read import read_block
    from .stages.write import write_block

    o, t = plan.options, plan.tiling
    on_gpu = plan.device.startswith("cuda")
    size, threads = pool_shape(cpus, gpus, node_cpus, on_gpu, o.actors, o.threads)
    depth = queue_depth(cpus, size, on_gpu)
    pool = device_pool(size, actor_cpus(cpus, size, on_gpu), 1 if on_gpu else 0, None if on_gpu else threads)
    config = ray.put(DeviceConfig(plan.spec, t, plan.mean, plan.std, plan.merge, o.dtype, plan.device,
                                  plan.precision, plan.batch_size, plan.info.weights_sha256))
    block_writer = ray.put(writer.block_writer())
    read = ray.remote(read_block).options(num_cpus=READ_CPUS, num_returns=2)
    preview = ray.put(preview) if preview else None
    sample = ray.put(sample) if sample else None
    write = ray.remote(write_block).options(num_cpus=WRITE_CPUS)
    write_slots = max(1, min(int(cpus), len(tasks)))
    todo = deque((task, 1) for task in tasks)
    load = {actor: 0 for actor in pool.take(len(tasks))}
    encoding: dict = {}    # actor call -> (task, attempt, actor)
    encoded: deque = deque()
    writing: dict = {}     # write task -> (task, attempt, actor)
    try:
        while todo or encoding or encoded or writing:
            while todo and load and min(load.values()) < depth and len(encoded) + len(writing) <= write_slots:
                actor = min(load, key=load.get)
                task, attempt = todo.popleft()
                window, part = read.remote(plan.mosaic.subset(*task.window), t, task, preview)  # its few sources only
                if previews is not None:
                    previews[task.block.by, task.block.bx] = part
                call = actor.encode.remote(config, task.block.by, task.block.bx, window)
                encoding[call], load[actor] = (task, attempt, actor), load[actor] + 1
            while encoded and len(writing) < write_slots:
                call, job = encoded.popleft()
                writing[write.remote(block_writer, t, call, sample)] = job
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


def feature_sample(plan: EncodePlan):
    """What the write tasks sample for the report's view of the features: the bands and the
    decimation :func:`rayvit.report.quicklook.read_small` would read."""
    from ..report.quicklook import COMPONENT_BANDS, small_shape, spread_bands
    from .stages.write import FeatureSample

    g, d = plan.feature_grid, plan.info.num_features
    bands = spread_bands(d, COMPONENT_BANDS)
    return FeatureSample(g.height, g.width, *small_shape(g.height, g.width, len(bands)),
                         tuple(b - 1 for b in bands))


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
    grid (the union of every date's items), ready for ``rayvit change``; with ``stack`` (and
    ``format="zarr"``) also ``output/features.zarr``, the dates as one ``(time, band, y, x)``
    store (:func:`rayvit.io.chunked.stack_products`)."""
    from ..io import stac
    from ..io.mosaic import target_grid

    o = options or EncodeOptions(**kwargs)
    o.check()
    if o.stack and not storage.is_local(str(output)):
        raise InputError("--stack writes the time stack to a local directory for now; encode the dates to one "
                         "and upload it, or stack them there with `rayvit stack`.")
    sources = stac_sources(o)
    grid = o.grid or target_grid(sources, o.crs, o.res, o.extent, o.extent_crs)
    results = {}
    for date, group in stac.by_date(sources).items():
        one = replace(o, by_date=False, stack=False, composite=None, grid=grid)
        results[date] = encode(stac.order(group, "least-cloudy"), storage.join(str(output), date), one)
    if o.stack and not o.dry_run:       # the dates' shards linked into output/features.zarr
        from ..io.chunked import stack_products

        dates = sorted(results)
        stack_products([results[d].outdir for d in dates], str(output), dates, overwrite=True)
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
    writer = ProductWriter(output, plan.feature_grid, d, [f"feature_{i + 1:04d}" for i in range(d)],
                           o.dtype, o.compress, quantized=quantize.is_quantized(o.dtype), format=o.format,
                           block_size=t.block_size, attributes={
                               "long_name": "ViT features", "model": plan.spec.name, "layer": plan.info.layer,
                               "rayvit_version": __version__, "source": "rayvit encode"})
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
    # a resumed run has no preview of the blocks read or written before: its report reads them
    preview, previews = (None if finished else imagery_preview(plan)), {}
    sample, parts = (None if finished else feature_sample(plan)), []
    if tasks:
        with Progress(todo, "encode", "tile", o.progress) as progress:
            for record in stream_blocks(plan, tasks, writer, cpus, gpus, node_cpus, preview, previews, sample):
                tiles, node = record.pop("tiles"), record.pop("node")
                parts.append(record.pop("sample", None))
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

    def finish() -> dict:       # the sidecar, once the product is assembled
        timings["commit_s"] = time.monotonic() - t1
        timings["total_s"] = time.monotonic() - t0
        # what this run did (a resumed run encodes fewer tiles): the rest of the sidecar is
        # identical for every run that writes this product
        return dict(sidecar, timings=dict(timings, tiles_encoded=todo, tiles_per_s=todo / timings["total_s"],
                                          nodes=len(nodes)))

    final = writer.assemble(with_data, plan.single_file)
    imagery = None
    if preview:
        import ray
        with contextlib.suppress(ray.exceptions.RayError):
            imagery = preview.assemble(ray.get(list(previews.values())))
    record = finish()
    report.write(writer.outdir, "features", raster=writer.readable(final), imagery=imagery,
                 features=sample.assemble(parts) if sample else None, sidecar=writer.sidecar(final, record))
    writer.seal(final, record)      # last: its presence says the product is complete
    writer.publish()
    return EncodeResult(writer.url(os.path.basename(final)), output, t.n_tiles, todo, written, len(finished),
                        timings["total_s"], km2, plan, first_batch, nodes, first_block_tiles=first_tiles,
                        timings=timings)


def arguments(p) -> None:
    """``rayvit encode``'s options (:mod:`rayvit.stages`)."""
    import argparse
    import textwrap

    from ..io.writer import DTYPES
    from ..options import FORMATS
    from ..options import add_ray_options, extent, floats, names, size
    from .merge import MERGERS
    from .plan import DEFAULT_MODEL, NORMALIZE_MODES

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = textwrap.dedent("""\
            Encode one raster or a mosaic of many into a feature raster on the model's patch grid.
            Each output pixel covers one model patch (e.g. 16x16 input pixels) and holds the
            patch's feature vector (one band per feature).

            examples:
              rayvit encode scene.tif -o out/
              rayvit encode 'tiles/*.tif' s3://bucket/extra.tif -o out/ \\
                  --model vit_small_patch14_reg4_dinov2.lvd142m --bands 4,3,2 --size 448 --stride 224
              rayvit encode --stac s3://bucket/catalog.json --assets red,green,blue,nir -o out/ \\
                  --datetime 2025-06-01/2025-08-31 --query 'eo:cloud_cover<20' --composite least-cloudy
              rayvit encode --stac https://stac.example/v1 --collection sentinel-2-l2a \\
                  --bbox 5.0,43.5,5.2,43.6 --assets B02,B03,B04,B08 --by-date -o dates/
            """)
    p.add_argument("inputs", nargs="*", help="raster paths, globs or URLs (s3://, gs://, az:// or abfs://, "
                                             "http(s)://); several form one mosaic (first listed wins on "
                                             "overlaps). Or none, with --stac")
    p.add_argument("-o", "--output", required=True, help="output directory")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help="a remote-sensing preset (`rayvit models` lists "
                   "them), any timm model name, or hf-hub:ORG/NAME "
                   f"(default: {DEFAULT_MODEL}); rayvit_patchmean_pN is a deterministic patch-mean baseline")
    g.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="load pretrained weights from the hub (default: yes; --no-pretrained: random)")
    g.add_argument("--weights", help="local weights file (.safetensors, or .pth loaded without "
                                     "executing pickled code); implies pretrained. For a preset, its "
                                     "published checkpoint layout is converted")
    g.add_argument("--wavelengths", type=floats,
                   help="centre wavelength of each selected band, micrometres (wavelength-conditioned "
                        "presets such as dofa-vit-b16; default: from the band names)")
    g.add_argument("--band-fill", choices=("zero", "mean"),
                   help="let a preset run without some of its bands: feed them as 0 reflectance (zero) "
                        "or as the band's mean (mean); the sidecar lists them. Default: missing bands are an error")
    g.add_argument("--layer", type=int, default=-1, help="feature layer/block index (default: -1 = last)")
    g.add_argument("--device", default="auto", help="auto (GPU when visible), cpu, cuda, cuda:N")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="inference precision (default: bf16 on GPU, fp32 on CPU)")
    g = p.add_argument_group("inputs")
    g.add_argument("--bands", type=band_option,
                   help="bands to read, in order: 1-based indices and/or names (the raster's band "
                        "descriptions, e.g. B02,B03,B04,B08), or a sensor (sentinel-2, sentinel-2-l2a, "
                        "landsat-oli, landsat-oli-sr, naip, rgb) naming all of them. Default: all, or "
                        "a preset's bands found by name")
    g.add_argument("--extent", type=extent, help="minx,miny,maxx,maxy to encode (default: all inputs)")
    g.add_argument("--extent-crs", help="CRS of --extent (default: the target CRS)")
    g.add_argument("--crs", help="target CRS (default: the first input's); others are warped onto it")
    g.add_argument("--skip-bad-inputs", action="store_true",
                   help="leave out input files that cannot be opened (missing, unreachable, corrupt) instead "
                        "of failing; they are listed in features.json and their area stays nodata")
    g.add_argument("--res", type=float, help="target pixel size in CRS units (default: the first input's; "
                                             "with --stac the finest asset's)")
    g = p.add_argument_group("STAC input (instead of input files)")
    g.add_argument("--stac", metavar="SOURCE",
                   help="a STAC ItemCollection, Item or static Catalog/Collection (JSON, local or in object "
                        "storage), a stac-geoparquet file, or a STAC API URL (searched with the filters below)")
    g.add_argument("--assets", type=names, help="assets to read as bands, in order: asset keys or band "
                   "(common) names, e.g. red,green,blue,nir or B02,B03,B04,B08")
    g.add_argument("--bbox", type=extent, help="lon/lat minx,miny,maxx,maxy the items must intersect")
    g.add_argument("--datetime", help="a date, a date-time, or START/END (.. for open), RFC 3339")
    g.add_argument("--collection", type=names, help="collection id(s), comma-separated")
    g.add_argument("--query", action="append", default=[], metavar="PROP<OP>VALUE",
                   help="item property filter, e.g. 'eo:cloud_cover<20' (repeatable)")
    g.add_argument("--composite", choices=("first", "last", "least-cloudy"),
                   help="several items over a pixel: the oldest (first), newest (last) or least cloudy "
                        "(eo:cloud_cover) valid one wins (default: least-cloudy)")
    g.add_argument("--by-date", action="store_true",
                   help="one product per date in OUTPUT/YYYY-MM-DD/, all on one grid (for rayvit change)")
    g.add_argument("--normalize", choices=NORMALIZE_MODES,
                   help="preset: the preset's input scaling and mean/std (default for presets that "
                        "have them); stats: per-band mean/std from a seeded sample of windows (default "
                        "otherwise); model: the model's mean/std after dividing by --scale; none")
    g.add_argument("--mean", type=floats, help="per-band means (overrides --normalize; with --std)")
    g.add_argument("--std", type=floats, help="per-band standard deviations (with --mean)")
    g.add_argument("--scale", type=float, help="with --normalize model or preset: pixel value of 1.0 "
                                               "(default: the preset's, e.g. 10000 for Sentinel-2; "
                                               "dtype max for integers, 1 for floats)")
    g = p.add_argument_group("tiling")
    g.add_argument("--size", type=size, default=224, help="tile size in input pixels, N or ROWS,COLS "
                                                           "(default: 224)")
    g.add_argument("--stride", type=size, help="tile stride in input pixels (default: = size, no overlap)")
    g.add_argument("--resize", choices=("none", "model"), default="none",
                   help="none: encode tiles at native size (default); model: resize each tile to the "
                        "model's input size (IAMAP)")
    g.add_argument("--merge", choices=tuple(MERGERS), help="how overlapping tiles combine (default: "
                   "center when tiles overlap: each keeps its central stride x stride part; hann, gaussian: "
                   "seamless blends, each tile weighted by a window that falls towards its edges)")
    g = p.add_argument_group("output")
    g.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="feature type (default: float32). float16 halves the size; int8/uint8 quarter it, "
                        "with a scale and offset per band (GDAL metadata) that every reader applies: "
                        "the error is at most half a step, 1/254 of the band's range (with --format zarr: int8 "
                        "with a scale per pixel, the error at most 1/254 of the pixel's largest |value|)")
    g.add_argument("--compress", default="zstd", help="COG compression (default: zstd)")
    g.add_argument("--format", choices=FORMATS, default="gtiff",
                   help="gtiff: GeoTIFF (one COG, or blocks + tile index; default); zarr: one Zarr v3 store "
                        "features.zarr, sharded one shard per block, for xarray/dask (float16/float32, or int8 with "
                        "a scale per pixel)")
    g.add_argument("--stack", action="store_true",
                   help="with --by-date --format zarr: also stack the dates into OUT/features.zarr, (time, band, "
                        "y, x), their shards linked (as `rayvit stack`)")
    g.add_argument("--blocks", action="store_true",
                   help="always write GeoTIFF blocks + their tile index features.gti.gpkg "
                        "(default: above 64 MiB uncompressed only)")
    g.add_argument("--block-size", type=int,
                   help="output block size in feature pixels: the unit of work (one read, one device "
                        "call, one written file). Default: the multiple of the stride nearest 128, so "
                        "that without overlap no tile straddles two blocks")
    g.add_argument("--overwrite", action="store_true", help="replace an output directory of another run")
    g.add_argument("--dry-run", action="store_true", help="print the plan and exit; writes nothing")
    g = p.add_argument_group("performance")
    g.add_argument("--actors", type=int,
                   help="device actors (default: one per GPU of the cluster; on CPU total CPUs / --threads; "
                        "never more than there are blocks)")
    g.add_argument("--threads", type=int,
                   help="torch threads per CPU actor (default: largest node CPUs / 4, between 1 and 4)")
    g.add_argument("--batch-size", type=int, help="tiles per model call (default: 64 GPU, 16 CPU)")
    add_ray_options(p)


def main(args) -> int:
    """``rayvit encode`` from its parsed options."""

    fields = EncodeOptions.__dataclass_fields__
    opts = {k: v for k, v in vars(args).items() if k in fields}
    opts["progress"] = not args.quiet
    if not args.inputs and not args.stac:
        raise InputError("give input rasters, or a STAC source with --stac.")
    if args.by_date:
        for date, result in encode_dates(args.output, EncodeOptions(**opts)).items():
            print(f"{date}:")
            print(result.plan.describe() + "\n" + result.estimate if args.dry_run else result.summary())
        if args.dry_run:
            print("dry run: nothing written.")
        elif args.stack:
            print(f"stack: the dates as one (time, band, y, x) store -> {storage.join(str(args.output), 'features.zarr')}")
        return 0
    result = encode(args.inputs, args.output, EncodeOptions(**opts))
    if args.dry_run:
        print(result.plan.describe())
        print(result.estimate)
        print("dry run: nothing written.")
    else:
        print(result.summary())
    return 0


def band_option(text: str):
    """``--bands``: a sensor name (``sentinel-2``), or comma-separated indices and/or names."""
    from .presets import SENSORS

    text = text.replace(" ", "")
    if not text or "," not in text and not text.isdigit() and text.lower() in SENSORS:
        return text.lower()
    return tuple(int(v) if v.isdigit() else v for v in text.split(","))
