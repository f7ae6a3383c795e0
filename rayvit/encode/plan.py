"""``encode``'s plan (driver, metadata only): options -> inputs' metadata, model geometry,
tiling, block tasks, normalisation, device. No pixel is encoded here."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Sequence

import numpy as np

from ..io.sampling import band_statistics
from ..errors import InputError, RayvitError
from ..grid import BlockTask, Tiling
from ..io import storage
from ..io.mosaic import Grid, Mosaic, Source, crs_name, open_mosaic
from ..io.writer import DTYPES, SINGLE_FILE_MAX, fingerprint
from ..options import FORMATS
from . import presets
from .bands import FILLS, Binding, bind, sensor_names
from .merge import MERGERS
from .spec import PRECISIONS, RESIZE_MODES, ModelInfo, ModelSpec

NORMALIZE_MODES = ("preset", "stats", "model", "none")
DEFAULT_MODEL = "vit_small_patch14_reg4_dinov2.lvd142m"


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
    bands: Sequence[int | str] | str | None = None   # indices, names, or a sensor ("sentinel-2")
    band_fill: str | None = None
    wavelengths: Sequence[float] | None = None
    size: int | tuple[int, int] = 224
    stride: int | tuple[int, int] | None = None
    resize: str = "none"
    merge: str | None = None
    normalize: str | None = None     # None: "preset" for a preset that has one, else "stats"
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
    format: str = "gtiff"           # or "zarr" (io.chunked)
    blocks: bool = False
    block_size: int | None = None   # feature pixels; None: a multiple of the stride near 256
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
    # STAC input (io.stac): a catalogue/search instead of input files
    stac: str | None = None
    assets: Sequence[str] | None = None
    bbox: Sequence[float] | None = None
    datetime: str | None = None
    collection: Sequence[str] | None = None
    query: Sequence[str] = ()
    composite: str | None = None     # None: least-cloudy
    by_date: bool = False
    stack: bool = False              # --by-date --format zarr: the dates also as one time stack
    grid: Grid | None = None         # imposed target grid (the dates of a --by-date run share one)

    def check(self) -> None:
        for name, value, valid in (("--resize", self.resize, RESIZE_MODES),
                                   ("--normalize", self.normalize or "stats", NORMALIZE_MODES),
                                   ("--band-fill", self.band_fill or "zero", FILLS),
                                   ("--dtype", self.dtype, DTYPES),
                                   ("--format", self.format, FORMATS),
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
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise InputError(f"unknown --device {self.device!r}; valid: auto, cpu, cuda, cuda:N.")
        stac_only = {"--assets": self.assets, "--bbox": self.bbox, "--datetime": self.datetime,
                     "--collection": self.collection, "--query": self.query, "--composite": self.composite,
                     "--by-date": self.by_date}
        given = [flag for flag, value in stac_only.items() if value]
        if given and not self.stac:
            raise InputError(f"{', '.join(given)} select STAC items: give them with --stac SOURCE.")
        if self.stac and not self.assets:
            raise InputError("--stac needs --assets: the asset keys or band names to read, in order "
                             "(e.g. --assets red,green,blue,nir).")
        if self.stack and not (self.by_date and self.format == "zarr"):
            raise InputError("--stack stacks the dates of a --by-date run written with --format zarr; give both.")
        if self.by_date and self.composite:
            raise InputError("--by-date writes one product per date; --composite merges the dates into "
                             "one: choose one of them.")


def stac_sources(o: EncodeOptions) -> list:
    """The mosaic sources of ``--stac``: the matching items, one band per asset, in composite
    order (io.stac)."""
    from ..io import stac

    items = stac.load_items(o.stac, o.bbox, o.datetime, o.collection, o.query)
    if not items:
        filters = ", ".join(f"{k} {v}" for k, v in (("--bbox", o.bbox), ("--datetime", o.datetime),
                                                   ("--collection", o.collection), ("--query", o.query)) if v)
        raise InputError(f"no STAC item in {storage.redact(o.stac)!r} matches"
                         + (f" {filters}" if filters else "") + "; widen the search.")
    sources = [stac.item_source(item, base, o.assets, o.s3_endpoint) for item, base in items]
    return stac.order(sources, o.composite or "least-cloudy")


def _public(source: Source) -> dict:
    """A source as recorded in run.json: its URLs (and its STAC assets') without secrets."""
    out = {f.name: getattr(source, f.name) for f in fields(source)}   # (asdict copies deeply: 10^4 files)
    out["url"] = storage.redact(source.url)
    out["parts"] = [_public(p) for p in source.parts]
    return out


def choose_device(requested: str, gpus: float) -> str:
    """The device encoder actors use, from the **cluster's** GPUs (not the driver's: a
    CPU-only head node with GPU workers is the usual cloud layout). ``auto``: one CUDA actor
    per GPU when the cluster has any, else CPU actors."""
    if requested == "auto":
        return "cuda" if gpus >= 1 else "cpu"
    if requested.startswith("cuda") and gpus < 1:
        raise InputError(f"--device {requested} was asked for, but the Ray cluster has no GPU; use "
                         "--device cpu (or auto), or add GPU nodes to the cluster.")
    return requested


def local_gpus() -> int:
    """GPUs of this machine (what embedded Ray would have). A Linux machine without a GPU
    driver (no NVIDIA or AMD kernel device) has none, said without importing torch (~1.5 s)."""
    import sys

    if sys.platform.startswith("linux") and not any(map(os.path.exists, ("/proc/driver/nvidia", "/dev/kfd"))):
        return 0
    import torch
    return torch.cuda.device_count()


def model_info(spec: ModelSpec) -> ModelInfo:
    """What the plan needs of the model (:func:`.model.plan_model`), kept in
    ``$RAYVIT_CACHE/models/`` for the next plan of the same model: building even a meta-device
    model imports torch and timm, ~3.5 s of every encode's driver, which needs nothing else
    of them. Kept only where no download is involved (``pretrained=False``, or a local
    ``--weights`` file, checked by size and modification time), keyed by the spec and the
    versions of rayvit and the model libraries; a spec that fails is never kept."""
    path = _model_cache(spec)
    if path and os.path.exists(path):
        try:
            with open(path) as fh:
                kept = json.load(fh)
            return ModelInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in kept.items()})
        except (OSError, ValueError, TypeError):     # unreadable: planned again and rewritten
            pass
    from .model import plan_model  # torch and timm: only where a model is built

    info = plan_model(spec)
    if path:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            storage.atomic_write(path, json.dumps(asdict(info)))
        except OSError:         # a read-only cache: planned every time
            pass
    return info


def _model_cache(spec: ModelSpec) -> str | None:
    from importlib import metadata

    from ..version import __version__

    if spec.pretrained and not (spec.weights and storage.is_local(spec.weights)):
        return None
    key = {"spec": spec.to_dict(), "rayvit": __version__}
    for package in ("timm", "torch", "torchvision", "torchgeo"):
        try:
            key[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            key[package] = None
    if spec.weights:
        try:
            st = os.stat(storage.local_path(spec.weights))
        except OSError:         # plan_model says what is wrong with it
            return None
        key["weights"] = [os.path.abspath(storage.local_path(spec.weights)), st.st_size, st.st_mtime_ns]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return os.path.join(storage.cache_root(), "models", digest + ".json")


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
    band_map: tuple = ()

    @property
    def normalize(self) -> str:
        return "user" if self.options.mean is not None else normalize_mode(
            self.options, presets.find(self.spec.preset or ""))

    @property
    def batch_size(self) -> int:
        return self.options.batch_size or device_defaults(self.device)[0]

    @property
    def out_bytes(self) -> int:
        h, w = self.tiling.feature_shape
        return h * w * self.info.num_features * np.dtype(self.options.dtype).itemsize

    @property
    def single_file(self) -> bool:
        return not self.options.blocks and self.out_bytes <= SINGLE_FILE_MAX

    def config(self) -> dict:
        """Everything that determines the output bytes (and nothing that does not)."""
        o = self.options
        return {
            "inputs": [_public(s) for s in self.mosaic.sources],
            "skipped_inputs": [d["input"] for d in self.mosaic.skipped],
            "bands": list(self.mosaic.bands), "band_map": list(self.band_map),
            "grid": asdict(self.mosaic.grid),
            "model": self.spec.to_dict(),
            "weights_sha256": self.info.weights_sha256,
            "layer_index": self.info.layer,
            "normalize": self.normalize, "mean": list(self.mean), "std": list(self.std),
            "size": list(_pair(o.size)), "stride": [self.tiling.y.stride, self.tiling.x.stride],
            "footprint": [self.tiling.y.footprint, self.tiling.x.footprint],
            "merge": self.merge, "dtype": o.dtype, "compress": o.compress,
            **({"format": o.format} if o.format != "gtiff" else {}),   # GeoTIFF runs keep their identity
            "block_size": self.tiling.block_size, "single_file": self.single_file,
            "precision": self.precision,
            # the model's call shape can change the last bits of float features
            "batch_size": self.batch_size,
        }

    def fingerprint(self, config: dict | None = None) -> str:
        """The run's identity (:func:`rayvit.io.writer.fingerprint`) of :meth:`config` (given,
        where the caller has it already: 10^4 inputs)."""
        return fingerprint(config or self.config())

    def on_device(self, device: str) -> "EncodePlan":
        """This plan with the device resolved against the cluster (precision default with it)."""
        return replace(self, device=device, precision=self.options.precision or device_defaults(device)[1])

    def block_tasks(self, finished: frozenset = frozenset()) -> list[BlockTask]:
        return self.tiling.block_tasks(finished)

    def bands_line(self) -> str:
        """``B02 <- band 2 (B2), ... ; B01 filled (zero)``: what feeds each model input."""
        if not self.band_map:
            return ", ".join(map(str, self.mosaic.bands))
        parts = []
        for r in self.band_map:
            label = r.get("band") or (f"{r['wavelength_um']:g} um" if "wavelength_um" in r else f"input {r['input']}")
            parts.append(f"{label} filled ({r['fill']})" if "fill" in r else
                         f"{label} <- band {r['raster_band']}" + (f" ({r['raster_name']})" if r.get("raster_name") else ""))
        return ", ".join(parts)

    def items_lines(self) -> list[str]:
        """STAC items: one line each (id, date, cloud cover, assets)."""
        items = [s for s in self.mosaic.sources if s.item]
        if not items:
            return []
        dates = sorted({(dict(s.item)["datetime"] or "undated")[:10] for s in items})
        lines = [f"items:    {len(items)} STAC item(s), {len(dates)} date(s) ({', '.join(dates)}), "
                 f"composite {self.options.composite or 'least-cloudy'} (first valid pixel in this order)"]
        for s in items:
            m = dict(s.item)
            cloud = f", cloud {m['cloud_cover']:g} %" if m["cloud_cover"] is not None else ""
            lines.append(f"          {m['id']} ({m['datetime']}{cloud}): "
                         + ", ".join(f"{key} {abs(p.affine.a):g} m" for (key, _), p in zip(m["assets"], s.parts)))
        return lines

    def index_note(self) -> str:
        """``; sources index PATH`` when the input files have one (:mod:`rayvit.io.sources`)."""
        from ..io import sources

        index = sources.existing_index([s.url for s in self.mosaic.sources if not s.parts])
        return f"; sources index {index}" if index else ""

    def describe(self) -> str:
        g, t = self.feature_grid, self.tiling
        a = g.affine
        redundancy = t.redundancy()
        return "\n".join([*self.items_lines(),
            f"inputs:   {len(self.mosaic.sources)} raster(s), {self.mosaic.grid.width}x"
            f"{self.mosaic.grid.height} px, bands {','.join(map(str, self.mosaic.bands))}, "
            f"{self.mosaic.grid.area_km2():.3f} km2" + self.index_note(),
            f"model:    {self.spec.name} (layer {self.info.layer}/{self.info.n_layers - 1}, "
            f"{self.info.num_features} features, patch footprint {t.y.footprint}x{t.x.footprint} px)",
            f"bands:    {self.bands_line()}",
            f"tiles:    {t.n_tiles} ({t.y.n_tiles}x{t.x.n_tiles}) of {t.y.size}x{t.x.size} px, "
            f"stride {t.y.stride}x{t.x.stride}, merge {self.merge}",
            f"blocks:   {len(self.block_tasks())} block tasks of up to {t.block_size}x{t.block_size} feature px; "
            + (f"tiles that straddle blocks are encoded once per block: {100 * redundancy:.1f} % extra "
               "encoding (a --block-size that is a multiple of the stride avoids it without overlap)"
               if redundancy > 0 else "no tile is encoded twice"),
            f"output:   {g.width}x{g.height} px x {self.info.num_features} bands {self.options.dtype}, "
            f"{self.out_bytes} bytes uncompressed, "
            f"{'one COG' if self.single_file else 'COG blocks + their tile index (features.gti.gpkg)'} "
            f"({t.y.n_blocks(t.block_size) * t.x.n_blocks(t.block_size)} blocks of "
            f"{t.block_size} px)",
            f"grid:     origin ({a.c:.6f}, {a.f:.6f}), pixel {a.a:.6g} x {-a.e:.6g}, "
            f"{crs_name(g.crs)}",
            f"device:   {self.device} ({self.precision})",
        ])


READ_CPUS = 0.25      # read tasks are I/O-bound: a quarter CPU each
ACTOR_CPU = 0.05      # Ray CPU resource of a CPU device actor: a token (see actor_cpus)
ACTORS_PER_CPU = 8    # at most, with --actors


def actor_cpus(cpus: float, actors: int, on_gpu: bool) -> float:
    """Ray CPU resource per device actor.

    On CPU the torch thread count, not this number, decides how many cores an actor uses,
    and the block stream bounds the reads and writes around it; the resource is a token.
    A larger share made idle actors, which outlive their encode (``DevicePool``), hold the
    CPUs that the next thing needs (an int8 commit's tasks waited for them forever), and a
    pool holding every CPU starved the reads and hung the pipeline. A GPU actor holds its
    GPU and one CPU.
    """
    if on_gpu:
        return 1.0
    if actors > ACTORS_PER_CPU * cpus:
        raise InputError(f"--actors {actors} is too many for the {cpus:g} CPUs of this Ray cluster; "
                         f"use at most {int(ACTORS_PER_CPU * cpus)}.")
    return ACTOR_CPU


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


PER_ACTOR = 2       # blocks queued per CPU actor: the next block's window is read while this one encodes


def queue_depth(cpus: float, actors: int, on_gpu: bool) -> int:
    """Blocks in flight (being read or waiting to encode) per device actor.

    On CPU :data:`PER_ACTOR`: the actors and the reads share the cores. On GPU, as many as
    the CPUs beside the actors (one each) can read at once: reading a block's window takes
    one core ~1.3 ms per tile (a 4-band uint16 deflate input, here) where an H100 encodes a
    ViT-B/16 tile in ~0.13 ms, so two blocks in flight per GPU (the CPU setting) would cap
    the feed at ~1,500 tiles/s whatever the node's cores.
    """
    if not on_gpu:
        return PER_ACTOR
    return max(PER_ACTOR, int((cpus - actors) // max(actors, 1)))


def estimate(plan: "EncodePlan", o: EncodeOptions, seconds: float = 3.0) -> str:
    """Encoder time from a short measured warm-up of the plan's model here (random weights,
    one actor's threads), scaled to the tiles and the default actor pool of this machine."""
    from .stages.device import forward_rate

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if plan.device.startswith("cuda"):
        return "estimate: skipped for GPU plans (measure with a short run)"
    actors, threads = pool_shape(cpus, 0, cpus, False, o.actors, o.threads)
    rate = forward_rate(plan.spec, plan.batch_size, threads, seconds=seconds)
    total = plan.tiling.n_tiles / (rate * actors)
    return (f"estimate:  {rate:.1f} tiles/s per actor measured here ({threads} thread(s), batch "
            f"{plan.batch_size}); {actors} actor(s) on this machine's {cpus} CPUs -> ~{total:.0f} s of "
            "encoding, plus ~20 s start-up (more nodes/actors: proportionally less)")


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


def normalize_mode(o: EncodeOptions, preset: presets.Preset | None) -> str:
    """``--normalize``: given, or ``preset`` when the model is a preset with its own normalisation."""
    if o.normalize == "preset" and (preset is None or preset.mean is None):
        raise InputError(f"--normalize preset: model {o.model!r} has no preset normalisation"
                         f"{'' if preset is None else ' (it is normalised with sampled statistics)'}; "
                         "use --normalize stats, model or none.")
    return o.normalize or ("preset" if preset is not None and preset.mean is not None else "stats")


def normalisation(o: EncodeOptions, mosaic: Mosaic, info: ModelInfo, preset: presets.Preset | None = None,
                  channels: Sequence[int] | None = None) -> tuple[tuple, tuple]:
    """Per-band mean/std the encoder applies: user values, the preset's (``(DN / scale - mean)
    / std`` per model input), the model's (scaled), or sampled stats."""
    n = mosaic.count
    mode = normalize_mode(o, preset)
    if o.mean is not None:
        if len(o.mean) != n or len(o.std) != n:
            raise InputError(f"--mean/--std need one value per band ({n} bands selected), got "
                             f"{len(o.mean)} and {len(o.std)}.")
        return tuple(map(float, o.mean)), tuple(map(float, o.std))
    if mode == "none":
        return (0.0,) * n, (1.0,) * n
    if mode == "preset":
        chans = channels or range(n)
        scale = [o.scale or preset.per_band(preset.scale, c) for c in chans]
        return (tuple(preset.per_band(preset.mean, c) * k for c, k in zip(chans, scale)),
                tuple(preset.per_band(preset.std, c) * k for c, k in zip(chans, scale)))
    if mode == "model":
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
    """Validate options and inputs and derive the whole plan (reads metadata and samples only).

    The device is resolved against this machine's GPUs (what embedded Ray has); when joining
    a cluster, :meth:`EncodePlan.on_device` resolves it again against the cluster's.
    """
    o = options
    o.check()
    preset = presets.find(o.model)
    check_model_options(o, preset)
    sensor = o.bands if isinstance(o.bands, str) else None
    if o.stac and not inputs:
        inputs = stac_sources(o)
    elif o.stac and not all(isinstance(i, Source) for i in inputs):
        raise InputError("give input rasters or --stac, not both.")
    mosaic = open_mosaic(inputs, None if sensor else o.bands, o.crs, o.res, o.extent, o.extent_crs,
                         o.s3_endpoint, skip_bad_inputs=o.skip_bad_inputs, grid=o.grid)
    size = _pair(o.size)
    stride = _pair(o.stride if o.stride is not None else size)
    binding = bind_bands(o, preset, mosaic, sensor)
    mosaic = replace(mosaic, bands=binding.bands)
    spec = ModelSpec(o.model, mosaic.count, size, o.pretrained, o.weights, o.layer, o.resize,
                     preset.name if preset else None, binding.channels, binding.fill,
                     binding.wavelengths)
    joining = o.address or os.environ.get("RAY_ADDRESS")
    # joining: validated against the cluster's GPUs in on_device, not this machine's
    device = choose_device(o.device, 1 if joining else local_gpus())
    info = model_info(spec)
    footprint = info.footprint(spec)
    merge_method = o.merge or ("center" if stride != size else "first")
    if o.block_size is not None and o.block_size < 1:
        raise InputError(f"--block-size must be >= 1 feature pixel, got {o.block_size}.")
    tiling = Tiling.create(mosaic.grid.height, mosaic.grid.width, size, stride, footprint,
                           o.block_size, center=merge_method == "center")
    mean, std = normalisation(o, mosaic, info, preset, binding.channels)
    precision = o.precision or device_defaults(device)[1]
    return EncodePlan(o, mosaic, spec, info, tiling, mosaic.grid.scaled(*footprint), mean, std,
                      merge_method, device, precision, tuple(binding.record(preset, o.band_fill)))


def check_model_options(o: EncodeOptions, preset: presets.Preset | None) -> None:
    """Options that only some models take."""
    if o.wavelengths is not None and not (preset and preset.wavelengths):
        takes = [p.name for p in presets.PRESETS.values() if p.wavelengths]
        raise InputError(f"--wavelengths: model {o.model!r} does not take band wavelengths; only "
                         f"wavelength-conditioned presets do ({', '.join(takes)}).")
    if o.band_fill is not None and not (preset and preset.bands):
        raise InputError(f"--band-fill: model {o.model!r} has no fixed list of input bands to fill "
                         "(only presets with named bands do); leave it out.")
    if isinstance(o.bands, str) and o.bands not in presets.SENSORS:
        raise InputError(f"--bands {o.bands!r} is not a sensor; known sensors: "
                         f"{', '.join(presets.SENSORS)} (or give band names or indices).")


def bind_bands(o: EncodeOptions, preset: presets.Preset | None, mosaic: Mosaic, sensor: str | None) -> Binding:
    """The raster bands the model reads and which input each feeds (see :mod:`.bands`)."""
    first = mosaic.sources[0]
    if sensor:
        names = sensor_names(sensor, mosaic.count, first.url)
    else:
        names = tuple(first.names[b - 1] if first.names else None for b in mosaic.bands)
    if preset is None:
        return Binding(mosaic.bands, names)
    return bind(preset, mosaic.bands, names, first.url, explicit=o.bands is not None and not sensor,
                band_fill=o.band_fill, wavelengths=o.wavelengths, sensor=sensor or preset.sensor)
