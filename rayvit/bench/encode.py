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

import math
import os
import shutil
import time

from .monitor import ProcessMonitor, wait_encoders_gone, workdir


def bench_encode(model: str = "vit_tiny_patch16_224", tiles: int = 1024, size: int = 224, bands: int = 3,
                 batch_size: int | None = None, scale_area: int = 4, work: str | None = None,
                 address: str | None = None) -> dict:
    from ..encode.pipeline import encode, timing_line
    from ..encode.plan import choose_device, device_defaults, local_gpus
    from ..encode.spec import ModelSpec
    from ..encode.stages.device import forward_rate
    from ..runtime import cluster_resources, init_ray
    from ..landscape import make_sample_raster

    with workdir(work) as work:
        import torch

        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        device = choose_device("auto", local_gpus())   # what encode's defaults pick on this machine
        gpu = device.startswith("cuda")
        default_batch, precision = device_defaults(device)
        explicit_batch = batch_size is not None
        batch_size = batch_size or default_batch
        print(f"bench: model {model}, {size}x{size} px tiles, {bands} bands, batch {batch_size}, "
              f"{device} {precision}" + (f" ({torch.cuda.get_device_name()})" if gpu else ""), flush=True)
        spec = ModelSpec(model, bands, (size, size), pretrained=False)
        bare = forward_rate(spec, batch_size, threads, device=device, precision=precision)
        print("bench: bare forward_intermediates on random tensors, one process, "
              + (f"{device} {precision}" if gpu else f"{threads} torch threads") + f": {bare:.2f} tiles/s",
              flush=True)
        init_ray(address)
        cpus, _, _ = cluster_resources()
        print(f"bench: encode on Ray with {int(cpus)} CPUs, default actor pool", flush=True)
        results = {"bare_tiles_per_s": bare, "runs": []}
        for factor in [1] + ([scale_area] if scale_area and scale_area > 1 else []):
            side = math.ceil(math.sqrt(tiles * factor))
            raster = os.path.join(work, f"bench_{factor}x.tif")
            if not os.path.exists(raster):
                make_sample_raster(raster, side * size, side * size, bands=bands, seed=factor)
            out = os.path.join(work, f"out_{factor}x")

            def run(raster=raster, out=out):
                shutil.rmtree(out, ignore_errors=True)
                # encode's defaults (single COG output included), bar the random weights
                return encode(raster, out, model=model, pretrained=False, size=size, progress=False,
                              address=address, **({"batch_size": batch_size} if explicit_batch else {}))

            # timed run: CPU per role only (cheap); memory from a second, untimed run
            wait_encoders_gone()  # the timed run starts its own actors, as `rayvit encode` does
            with ProcessMonitor(interval=0.5, memory=False) as cpu:
                t0 = time.perf_counter()
                r = run()
                elapsed = time.perf_counter() - t0
            wait_encoders_gone()  # else the memory run counts the timed run's exiting actors too
            with ProcessMonitor() as mem:
                run()
            steady = (r.tiles_encoded - r.first_block_tiles) / max(elapsed - r.first_batch_s, 1e-9)
            roles = cpu.cpu_by_role()
            row = {"area": factor, "tiles": r.tiles_encoded, "elapsed_s": elapsed,
                   "tiles_per_s": r.tiles_encoded / elapsed, "ratio": r.tiles_encoded / elapsed / bare,
                   "startup_s": r.first_batch_s, "steady_tiles_per_s": steady, "steady_ratio": steady / bare,
                   "cpu_s": roles, "bare_cpu_s": None if gpu else r.tiles_encoded / bare * threads,
                   "peak_driver_rss_mb": mem.driver / 2**20, "peak_tree_uss_mb": mem.tree / 2**20}
            results["runs"].append(row)
            print(f"bench: {factor}x area: {row['tiles']} tiles in {elapsed:.1f} s = "
                  f"{row['tiles_per_s']:.2f} tiles/s end to end; RATIO to bare forward "
                  f"{row['ratio']:.3f} (start-up to the first written block {r.first_batch_s:.1f} s; after it "
                  f"{steady:.2f} tiles/s, ratio {row['steady_ratio']:.3f})", flush=True)
            print(f"bench: {factor}x area: {timing_line(r.timings)}; {len(cpu.started)} Ray worker processes "
                  "started during the run", flush=True)
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
