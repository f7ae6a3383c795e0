"""``rayvit bench``: encode throughput vs the bare model, and memory vs area, in one run.

Measures, on the same machine in one process:

1. the bare model: ``forward_intermediates`` (what the encoder calls) on random tensors,
   same batch size and thread count as the encoder actor, after a warm-up;
2. ``rayvit.encode`` end to end on a generated raster of at least ``tiles`` tiles, Ray
   already started (a cluster is), everything else counted: planning, actor start and
   model load, reads, inference, merge, COG writes, final commit;
3. the same encode on ``scale_area`` times the area;

and prints tiles/s of each, their ratio, the CPU time each kind of process used during
the encode (against what the bare model needs for the same tiles), and the peak resident
memory of this process and the summed unique memory (USS) of all processes (raylet,
workers), sampled every 0.2 s during a second, untimed run of each encode (sampling USS
costs a quarter of a core). The bare model is measured before Ray starts, so that Ray's
idle processes do not slow it down.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import threading
import time

import numpy as np
import psutil


@contextlib.contextmanager
def _workdir(workdir: str | None):
    """``workdir`` (created), or a temporary directory removed afterwards."""
    own = workdir is None
    path = workdir or tempfile.mkdtemp(prefix="rayvit-bench-")
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    finally:
        if own:
            shutil.rmtree(path, ignore_errors=True)


class ProcessMonitor:
    """Samples this process and all its child processes (Ray's raylet, workers, actors).

    Always: CPU time per process, grouped by role (:meth:`cpu_by_role`), which costs ~2 ms
    a sweep. With ``memory``: the peak RSS of this process and the peak summed USS of the
    tree. USS (memory unique to a process) rather than RSS: Ray's object store is shared
    memory that every reader maps, and RSS would count it once per process. Reading USS
    walks each process's page tables: ~50 ms a sweep of 10 Ray processes here, a quarter of
    a core at 0.2 s, so timed runs leave it off.
    """

    ROLES = ("encoder actors", "read tasks", "driver", "Ray services")
    ENCODER = 3  # the rank of an encoder actor process (see _rank)

    def __init__(self, interval: float = 0.2, memory: bool = True):
        self.interval, self.memory, self.driver, self.tree = interval, memory, 0, 0
        self.tree_by_role: dict[str, tuple[int, int]] = {}  # at the peak: (processes, USS)
        self._cpu: dict[int, float] = {}
        self._base: dict[int, float] = {}
        self._level: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rank(name: str) -> int:
        """A worker process's role from its title; it can only move up this order: a
        fresh worker (0, no title yet), task worker (1: reads), Ray Data's own actors (2),
        an encoder actor (3)."""
        if "MapWorker" in name:
            return ProcessMonitor.ENCODER
        if name.startswith(("ray::IDLE", "ray::Read")):
            return 1
        return 2 if name.startswith("ray::") else 0

    def _role_of(self, pid: int) -> str:
        return {-1: "driver", 1: "read tasks", self.ENCODER: "encoder actors"}.get(self._level[pid], "Ray services")

    def _sweep(self, me: psutil.Process) -> None:
        own = 0
        uss: dict[str, list[int]] = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    self._cpu[proc.pid] = t.user + t.system
                    level = -1 if proc.pid == me.pid else self._rank(" ".join(proc.cmdline()[:1]))
                    self._level[proc.pid] = max(level, self._level.get(proc.pid, level))
                    if self.memory:
                        if proc.pid == me.pid:
                            own = proc.memory_info().rss
                        uss.setdefault(self._role_of(proc.pid), []).append(proc.memory_full_info().uss)
            except psutil.Error:
                pass
        total = sum(map(sum, uss.values()))
        if total > self.tree:
            self.tree_by_role = {role: (len(v), sum(v)) for role, v in uss.items()}
        self.driver, self.tree = max(self.driver, own), max(self.tree, total)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            self._sweep(me)
            time.sleep(self.interval)

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds spent while monitoring, per role (processes that ended count up to
        their last sample)."""
        out = dict.fromkeys(self.ROLES, 0.0)
        for pid, cpu in self._cpu.items():
            out[self._role_of(pid)] += cpu - self._base.get(pid, 0.0)
        return out

    def __enter__(self):
        self._sweep(psutil.Process())
        self._base = dict(self._cpu)
        self.driver = self.tree = 0
        self.tree_by_role = {}
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sweep(psutil.Process())


def _wait_encoders_gone(timeout: float = 60.0) -> None:
    """Until no encoder actor process of a finished encode is left among our children."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = []
        for proc in psutil.Process().children(recursive=True):
            try:
                names.append(" ".join(proc.cmdline()[:1]))
            except psutil.Error:
                pass
        if not any(ProcessMonitor._rank(n) == ProcessMonitor.ENCODER for n in names):
            return
        time.sleep(0.5)


def bare_forward(model_name: str, size: int | tuple, bands: int, batch_size: int, threads: int,
                 seconds: float = 20.0, spec=None, device: str = "cpu", precision: str = "fp32") -> float:
    """Tiles/s of the bare model call the encoder makes, on random tensors already on
    ``device`` (``spec``: the model of a plan, random weights, instead of
    ``model_name``/``size``/``bands``)."""
    import dataclasses

    import torch

    from .encode.encoder import autocast
    from .encode.model import ModelSpec, build_model, model_info

    torch.set_num_threads(threads)
    if spec is None:
        spec = ModelSpec(model_name, bands, (size, size), pretrained=False)
    else:
        spec = dataclasses.replace(spec, pretrained=False, weights=None)
    model = build_model(spec).to(device)
    info = model_info(model, spec)
    shape = tuple(info.model_input) if spec.resize == "model" else tuple(spec.tile_size)
    x = torch.randn(batch_size, spec.in_chans, *shape, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def forward():
        return model.forward_intermediates(x, indices=[info.layer], norm=True, output_fmt="NCHW",
                                           intermediates_only=True)

    with torch.inference_mode(), autocast(device, precision):
        for _ in range(3):
            forward()
        sync()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            forward()
            n += batch_size
        sync()
    return n / (time.perf_counter() - t0)


def bench_encode(model: str = "vit_tiny_patch16_224", tiles: int = 1024, size: int = 224, bands: int = 3,
                 batch_size: int | None = None, scale_area: int = 4, workdir: str | None = None,
                 address: str | None = None) -> dict:
    from .encode.pipeline import device_defaults, encode
    from .runtime import cluster_resources, init_ray
    from .sample import make_sample_raster

    with _workdir(workdir) as workdir:
        import torch

        from .encode.encoder import resolve_device
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        device = resolve_device("auto")        # what encode's defaults pick on this machine
        gpu = device.startswith("cuda")
        default_batch, precision = device_defaults(device)
        batch_size = batch_size or default_batch
        print(f"bench: model {model}, {size}x{size} px tiles, {bands} bands, batch {batch_size}, "
              f"{device} {precision}" + (f" ({torch.cuda.get_device_name()})" if gpu else ""), flush=True)
        bare = bare_forward(model, size, bands, batch_size, threads, device=device, precision=precision)
        print("bench: bare forward_intermediates on random tensors, one process, "
              + (f"{device} {precision}" if gpu else f"{threads} torch threads") + f": {bare:.2f} tiles/s",
              flush=True)
        init_ray(address)
        cpus, _, _ = cluster_resources()
        print(f"bench: encode on Ray with {int(cpus)} CPUs, default actor pool", flush=True)
        results = {"bare_tiles_per_s": bare, "runs": []}
        for factor in [1] + ([scale_area] if scale_area and scale_area > 1 else []):
            side = math.ceil(math.sqrt(tiles * factor))
            raster = os.path.join(workdir, f"bench_{factor}x.tif")
            if not os.path.exists(raster):
                make_sample_raster(raster, side * size, side * size, bands=bands, seed=factor)
            out = os.path.join(workdir, f"out_{factor}x")

            def run(raster=raster, out=out):
                shutil.rmtree(out, ignore_errors=True)
                return encode(raster, out, model=model, pretrained=False, size=size, batch_size=batch_size,
                              blocks=True, progress=False, address=address)

            # timed run: CPU per role only (cheap); memory from a second, untimed run
            with ProcessMonitor(interval=0.5, memory=False) as cpu:
                t0 = time.perf_counter()
                r = run()
                elapsed = time.perf_counter() - t0
            _wait_encoders_gone()  # else the memory run counts the timed run's exiting actors too
            with ProcessMonitor() as mem:
                run()
            steady = (r.tiles_encoded - batch_size) / max(elapsed - r.first_batch_s, 1e-9)
            roles = cpu.cpu_by_role()
            row = {"area": factor, "tiles": r.tiles_encoded, "elapsed_s": elapsed,
                   "tiles_per_s": r.tiles_encoded / elapsed, "ratio": r.tiles_encoded / elapsed / bare,
                   "startup_s": r.first_batch_s, "steady_tiles_per_s": steady, "steady_ratio": steady / bare,
                   "cpu_s": roles, "bare_cpu_s": None if gpu else r.tiles_encoded / bare * threads,
                   "peak_driver_rss_mb": mem.driver / 2**20, "peak_tree_uss_mb": mem.tree / 2**20}
            results["runs"].append(row)
            print(f"bench: {factor}x area: {row['tiles']} tiles in {elapsed:.1f} s = "
                  f"{row['tiles_per_s']:.2f} tiles/s end to end; RATIO to bare forward "
                  f"{row['ratio']:.3f} (start-up to first batch {r.first_batch_s:.1f} s; after it "
                  f"{steady:.2f} tiles/s, ratio {row['steady_ratio']:.3f})", flush=True)
            print(f"bench: {factor}x area: CPU-seconds used {sum(roles.values()):.1f} of "
                  f"{cpus * elapsed:.1f} ({int(cpus)} CPUs x {elapsed:.1f} s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in roles.items())
                  + ("" if gpu else f"; the bare model needs {row['bare_cpu_s']:.1f} for these tiles "
                     f"({threads} threads x {row['tiles']} / {bare:.2f} tiles/s)"), flush=True)
            print(f"bench: {factor}x area: peak RSS driver {row['peak_driver_rss_mb']:.0f} MB, driver + Ray "
                  f"processes (USS) {row['peak_tree_uss_mb']:.0f} MB (a second, untimed run; at the peak: "
                  + ", ".join(f"{k} {n} x {u / n / 2**20:.0f} MB" for k, (n, u) in mem.tree_by_role.items())
                  + ")", flush=True)
        if len(results["runs"]) == 2:
            a, b = results["runs"]
            print(f"bench: peak memory {b['area']}x / 1x area: driver "
                  f"{b['peak_driver_rss_mb'] / a['peak_driver_rss_mb']:.2f}, all processes "
                  f"{b['peak_tree_uss_mb'] / a['peak_tree_uss_mb']:.2f}", flush=True)
        return results



def make_feature_raster(path: str, pixels: int, bands: int, clusters: int = 16, seed: int = 0,
                        width: int = 4096) -> None:
    """A float16 "feature" raster (Float32 stored with NBITS=16) of at least ``pixels`` pixels:
    ``clusters`` random centres in ``bands`` dimensions plus noise, written strip by strip."""
    import rasterio
    from rasterio.transform import from_origin

    height = -(-pixels // width)
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(clusters, bands)).astype(np.float32)
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype="float32", nbits=16,
                   tiled=True, blockxsize=256, blockysize=256, interleave="pixel", bigtiff="yes",
                   crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10), nodata=np.nan)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, height, 128):
            rows = min(128, height - row)
            labels = rng.integers(0, clusters, size=rows * width)
            x = centres[labels] + rng.standard_normal((rows * width, bands), dtype=np.float32)
            dst.write(x.T.reshape(bands, rows, width), window=((row, row + rows), (0, width)))


def _timed(fn):
    with ProcessMonitor() as mem:
        t0 = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - t0
    return value, elapsed, mem


def bench_analysis(pixels: int = 10_000_000, bands: int = 384, scales=(0.25, 1.0), k: int = 16,
                   kmeans_iter: int = 10, sklearn_pixels: int = 500_000, workdir: str | None = None,
                   address: str | None = None) -> dict:
    """Time and peak memory of rayvit PCA (3 components) and KMeans (k) at several raster sizes,
    and of scikit-learn single-process on an in-memory subset, scaled per pixel."""
    import rasterio
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from .analysis.cluster import cluster
    from .analysis.reduce import reduce
    from .runtime import init_ray

    kparams = {"max_iter": kmeans_iter, "tol": 0.0}
    with _workdir(workdir) as workdir:
        init_ray(address)
        results = {"rayvit": [], "sklearn": {}}
        for scale in scales:
            n = int(pixels * scale)
            raster = os.path.join(workdir, f"features_{n}.tif")
            if not os.path.exists(raster):
                t0 = time.perf_counter()
                make_feature_raster(raster, n, bands)
                print(f"bench: generated {raster} ({n} px x {bands} bands float16, "
                      f"{os.path.getsize(raster) / 2**30:.1f} GiB) in {time.perf_counter() - t0:.0f} s", flush=True)
            for name, run in (("PCA", lambda raster=raster: reduce(raster, os.path.join(workdir, "pca"), n_components=3,
                                                     overwrite=True, progress=False, address=address)),
                              ("KMeans", lambda raster=raster: cluster(raster, os.path.join(workdir, "km"), n_clusters=k,
                                                         params=kparams, overwrite=True, progress=False,
                                                         address=address))):
                r, elapsed, mem = _timed(run)
                row = {"method": name, "pixels": r.n_pixels, "elapsed_s": elapsed,
                       "s_per_mpx": elapsed / r.n_pixels * 1e6, "peak_driver_rss_mb": mem.driver / 2**20,
                       "peak_tree_uss_mb": mem.tree / 2**20}
                results["rayvit"].append(row)
                print(f"bench: rayvit {name:6s} {r.n_pixels:>10d} px: {elapsed:7.1f} s "
                      f"({row['s_per_mpx']:.2f} s/Mpx), peak RSS driver {row['peak_driver_rss_mb']:.0f} MB, "
                      f"all processes (USS) {row['peak_tree_uss_mb']:.0f} MB", flush=True)
        with rasterio.open(raster) as src:
            rows = min(src.height, -(-sklearn_pixels // src.width))
            x = src.read(window=((0, rows), (0, src.width))).reshape(bands, -1).T.astype(np.float64)
        m = len(x)
        for name, run in (("PCA", lambda: PCA(3).fit_transform(StandardScaler().fit_transform(x))),
                          ("KMeans", lambda: KMeans(k, n_init=1, max_iter=kmeans_iter, tol=0.0, random_state=0,
                                                    algorithm="lloyd").fit(StandardScaler().fit_transform(x))
                           .labels_)):
            _, elapsed, mem = _timed(run)
            row = {"pixels": m, "elapsed_s": elapsed, "s_per_mpx": elapsed / m * 1e6,
                   "scaled_to_largest_s": elapsed / m * results["rayvit"][-1]["pixels"],
                   "peak_rss_mb": mem.driver / 2**20, "data_mb": x.nbytes / 2**20}
            results["sklearn"][name] = row
            print(f"bench: sklearn {name:6s} {m:>10d} px in memory ({row['data_mb']:.0f} MB float64): "
                  f"{elapsed:7.1f} s ({row['s_per_mpx']:.2f} s/Mpx; scaled to {results['rayvit'][-1]['pixels']} "
                  f"px: {row['scaled_to_largest_s']:.0f} s), peak RSS {row['peak_rss_mb']:.0f} MB "
                  "(grows with pixels: the whole matrix is in memory)", flush=True)
        for name in ("PCA", "KMeans"):
            runs = [r for r in results["rayvit"] if r["method"] == name]
            a, b = runs[0], runs[-1]
            print(f"bench: {name}: pixels x{b['pixels'] / a['pixels']:.2f} -> time x"
                  f"{b['elapsed_s'] / a['elapsed_s']:.2f}, s/Mpx ratio {b['s_per_mpx'] / a['s_per_mpx']:.2f} "
                  f"(1 = linear), peak memory x{b['peak_tree_uss_mb'] / a['peak_tree_uss_mb']:.2f} "
                  f"(driver x{b['peak_driver_rss_mb'] / a['peak_driver_rss_mb']:.2f}); vs sklearn per pixel: "
                  f"{b['s_per_mpx'] / results['sklearn'][name]['s_per_mpx']:.2f}x its time", flush=True)
        return results


def _encode_rate(args: list[str], env: dict | None = None) -> float:
    """End-to-end tiles/s of one ``rayvit encode`` run in a fresh process (from its summary)."""
    import re
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "rayvit")
    r = subprocess.run([exe, "encode", *args, "--quiet", "--overwrite"], capture_output=True, text=True, env=env)
    m = re.search(r"encoded (\d+)/\d+ tiles, .* in ([0-9.]+) s \(([0-9.]+) tiles/s\)", r.stdout)
    if r.returncode or not m:
        raise RuntimeError(f"bench encode failed: {r.stderr[-2000:]}")
    return float(m.group(3))


def bench_compare(what: str, tiles: int = 1024, size: int = 224, model: str = "vit_tiny_patch16_224",
                  s3_url: str | None = None, address: str | None = None, workdir: str | None = None) -> float:
    """Encode throughput of the same raster two ways, in one run: ``storage`` (``s3_url``
    upload vs local disk) or ``nodes`` (cluster at ``address`` vs embedded single node)."""
    from .io import storage
    from .sample import make_sample_raster

    with _workdir(workdir) as workdir:
        side = math.ceil(math.sqrt(tiles))
        raster = os.path.join(workdir, "bench_compare.tif")
        if not os.path.exists(raster):
            make_sample_raster(raster, side * size, side * size, bands=3, seed=1)
        common = ["--model", model, "--no-pretrained", "--size", str(size), "--batch-size", "16"]
        local = _encode_rate([raster, "-o", os.path.join(workdir, "local"), *common])
        if what == "storage":
            if not s3_url:
                raise ValueError("bench storage needs --s3-url s3://bucket/prefix")
            remote = storage.join(s3_url, "bench_compare.tif")
            storage.fs_for(remote).put_file(raster, remote)
            other = _encode_rate([remote, "-o", os.path.join(workdir, "s3"), *common])
            label = f"S3 ({remote}) / local disk"
        else:
            if not address:
                raise ValueError("bench nodes needs --address of a multi-node cluster")
            other = _encode_rate([raster, "-o", os.path.join(workdir, "nodes"), *common, "--address", address])
            label = f"cluster at {address} / embedded single node"
        print(f"bench: local {local:.2f} tiles/s, other {other:.2f} tiles/s; RATIO {label}: "
              f"{other / local:.3f}", flush=True)
        return other / local
