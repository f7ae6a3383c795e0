"""``rayvit bench``: encode throughput vs the bare model, and memory vs area, in one run.

Measures, on the same machine in one process:

1. the bare model: ``forward_intermediates`` (what the encoder calls) on random tensors,
   same batch size and thread count as the encoder actor, after a warm-up;
2. ``rayvit.encode`` end to end on a generated raster of at least ``tiles`` tiles, Ray
   already started (a cluster is), everything else counted: planning, actor start and
   model load, reads, inference, merge, COG writes, final commit;
3. the same encode on ``scale_area`` times the area;

and prints tiles/s of each, their ratio, and the peak resident memory of this process
and the summed unique memory (USS) of all processes (raylet, workers), sampled every
0.2 s during each encode. The bare model is measured before Ray starts, so that Ray's
idle processes do not slow it down.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
import time

import psutil
import torch


class PeakMemory:
    """Peak RSS of this process, and peak summed USS of it and all its child processes.

    USS (memory unique to a process) rather than RSS for the tree: Ray's object store is
    shared memory that every reader maps, and RSS would count it once per process.
    """

    def __init__(self, interval: float = 0.2):
        self.interval, self.driver, self.tree = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            try:
                own = me.memory_info().rss
                total = own
                total = me.memory_full_info().uss
                for child in me.children(recursive=True):
                    try:
                        total += child.memory_full_info().uss
                    except psutil.Error:
                        pass
            except psutil.Error:
                own = 0
            self.driver, self.tree = max(self.driver, own), max(self.tree, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bare_forward(model_name: str, size: int, bands: int, batch_size: int, threads: int,
                 seconds: float = 20.0) -> float:
    """Tiles/s of the bare model call the encoder makes, on random tensors."""
    from .encode.model import ModelSpec, build_model, model_info

    torch.set_num_threads(threads)
    spec = ModelSpec(model_name, bands, (size, size), pretrained=False)
    model = build_model(spec)
    info = model_info(model, spec)
    x = torch.randn(batch_size, bands, size, size)
    with torch.inference_mode():
        for _ in range(2):
            model.forward_intermediates(x, indices=[info.layer], norm=True, output_fmt="NCHW",
                                        intermediates_only=True)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.forward_intermediates(x, indices=[info.layer], norm=True, output_fmt="NCHW",
                                        intermediates_only=True)
            n += batch_size
    return n / (time.perf_counter() - t0)


def bench_encode(model: str = "vit_tiny_patch16_224", tiles: int = 1024, size: int = 224, bands: int = 3,
                 batch_size: int = 16, scale_area: int = 4, workdir: str | None = None,
                 address: str | None = None) -> dict:
    from .encode.pipeline import encode
    from .runtime import cluster_resources, init_ray
    from .sample import make_sample_raster

    own_dir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="rayvit-bench-")
    os.makedirs(workdir, exist_ok=True)
    try:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"bench: model {model}, {size}x{size} px tiles, {bands} bands, batch {batch_size}", flush=True)
        bare = bare_forward(model, size, bands, batch_size, threads)
        print(f"bench: bare forward_intermediates on random tensors, one process, {threads} torch "
              f"threads: {bare:.2f} tiles/s", flush=True)
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
            shutil.rmtree(out, ignore_errors=True)
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                r = encode(raster, out, model=model, pretrained=False, size=size, batch_size=batch_size,
                           blocks=True, progress=False, address=address)
                elapsed = time.perf_counter() - t0
            steady = (r.tiles_encoded - batch_size) / max(elapsed - r.first_batch_s, 1e-9)
            run = {"area": factor, "tiles": r.tiles_encoded, "elapsed_s": elapsed,
                   "tiles_per_s": r.tiles_encoded / elapsed, "ratio": r.tiles_encoded / elapsed / bare,
                   "startup_s": r.first_batch_s, "steady_tiles_per_s": steady, "steady_ratio": steady / bare,
                   "peak_driver_rss_mb": mem.driver / 2**20, "peak_tree_uss_mb": mem.tree / 2**20}
            results["runs"].append(run)
            print(f"bench: {factor}x area: {run['tiles']} tiles in {elapsed:.1f} s = "
                  f"{run['tiles_per_s']:.2f} tiles/s end to end; RATIO to bare forward "
                  f"{run['ratio']:.3f} (start-up to first batch {r.first_batch_s:.1f} s; after it "
                  f"{steady:.2f} tiles/s, ratio {run['steady_ratio']:.3f}); peak RSS driver "
                  f"{run['peak_driver_rss_mb']:.0f} MB, driver + Ray processes (USS) "
                  f"{run['peak_tree_uss_mb']:.0f} MB", flush=True)
        if len(results["runs"]) == 2:
            a, b = results["runs"]
            print(f"bench: peak memory {b['area']}x / 1x area: driver "
                  f"{b['peak_driver_rss_mb'] / a['peak_driver_rss_mb']:.2f}, all processes "
                  f"{b['peak_tree_uss_mb'] / a['peak_tree_uss_mb']:.2f}", flush=True)
        return results
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)

