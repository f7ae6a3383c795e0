"""``rayvit bench pipeline``: what the pipeline itself costs per tile, around a model that
costs nothing.

``rayvit.encode`` runs with encode's default options (single COG output included) and the
null encoder ``rayvit_null_d{D}_p16`` (D features per 16 x 16 patch at near-zero compute) on
generated 4-band uint16 rasters (deflate, like most COGs) of 224 x 224 px tiles, at two
sizes, after an untimed warm-up run (the driver's first run imports torch and timm and
starts Ray's workers; every run then starts its own device actors, as a command does). The CPU time of every process is split by role (read tasks,
device actors, write tasks, driver, Ray services), and the **difference** between the two
sizes, divided by the difference in tiles, gives the marginal CPU-ms per tile of each
stage: start-up (actor imports, a few CPU-seconds that vary by +-2 s between runs) cancels
out; the whole machine's CPU time over each run, from ``/proc/stat``, is differenced the
same way (it also counts what the per-process sweeps miss: short-lived processes, the
kernel). Both sizes have enough blocks (2 x 2 and 4 x 4) to start every actor. With the null model, the device actors' share
is the device stage without the model: normalisation, tile cutting, merge, cast, copies.
A last, untimed run per width samples memory: the driver's peak must not grow with D.
At D = 768 float16 the same runs are made with ``--format zarr`` too (where zarr is
installed): its write tasks' CPU per tile against the GeoTIFF blocks'; and at D = 768 int8 both
ways: GeoTIFF (float blocks, then the commit's per-band quantisation rewrites them) against
Zarr (each write task quantises its block per pixel). Last, at D = 768 float16, what the two
codecs at either end cost: ``--compress none`` outputs, the same inputs as zstd GeoTIFFs
(predictor 2, written once beside them), and both. The roles include Ray's transport (a task's
result is copied into the object store by its worker); :func:`transport_ms` prices it apart.
"""

from __future__ import annotations

import math
import os
import shutil
import time

import rasterio.shutil

from .monitor import ProcessMonitor, wait_encoders_gone, workdir

TARGET_MS = 2.0   # all stages together, D = 768, float16: lets 16 cores feed ~8,000 tiles/s


def transport_ms(side: int, size: int, bands: int, width: int, dtype: str, repeats: int = 5) -> tuple[float, float]:
    """CPU-ms per tile of ``ray.put`` (in this process, best of ``repeats``) of a first block's
    read window (native uint16 pixels + uint8 validity) and of its merged features (``width``
    bands of ``dtype`` + validity), on a square raster of ``side`` px tiled by ``size``-px tiles
    with the null encoder's 16-px patches and encode's default blocks: what Ray's object store
    costs the read tasks and the device actors, whose roles include it."""
    import numpy as np
    import ray

    from ..grid import Tiling

    t = Tiling.create(side, side, (size, size), (size, size), (16, 16), None, center=False)
    task = t.block_task(next(iter(t.blocks())))
    _, _, rows, cols = task.window
    b = task.block
    window = (np.ones((bands, rows, cols), np.uint16), np.ones((rows, cols), np.uint8))
    features = (np.ones((width, b.rows, b.cols), dtype), np.ones((b.rows, b.cols), np.uint8))

    def best(value) -> float:
        spent = []
        for _ in range(repeats):
            t0 = time.process_time()
            ref = ray.put(value)
            spent.append(time.process_time() - t0)
            del ref
        return 1000 * min(spent) / task.n_tiles
    return best(window), best(features)


def bench_pipeline(widths=(384, 768), dtypes=("float16", "float32", "int8"), tiles=(1024, 4096), size: int = 224,
                   bands: int = 4, work: str | None = None, address: str | None = None,
                   formats=("gtiff", "zarr")) -> list[dict]:
    from ..encode.pipeline import encode
    from ..runtime import cluster_resources, init_ray
    from ..landscape import make_sample_raster

    rows = []
    with workdir(work) as work:
        rasters = {}
        for n in tiles:
            side = math.ceil(math.sqrt(n))
            rasters["deflate", n] = os.path.join(work, f"pipeline_{n}.tif")
            if not os.path.exists(rasters["deflate", n]):
                make_sample_raster(rasters["deflate", n], side * size, side * size, bands=bands, seed=n, dtype="uint16")
            rasters["zstd", n] = os.path.join(work, f"pipeline_{n}_zstd.tif")
            if not os.path.exists(rasters["zstd", n]):
                rasterio.shutil.copy(rasters["deflate", n], rasters["zstd", n], driver="GTiff", tiled=True,
                                     blockxsize=256, blockysize=256, compress="zstd", predictor=2)
        init_ray(address)
        cpus = cluster_resources()[0]
        print(f"bench pipeline: null encoders, {size}x{size} px tiles, {bands} bands uint16, "
              f"{'/'.join(map(str, tiles))} tiles, default encode options, Ray with {int(cpus)} CPUs", flush=True)
        try:
            import zarr  # noqa: F401
        except ImportError:
            formats = tuple(f for f in formats if f != "zarr")

        def run(n, d, dtype, memory=False, fmt="gtiff", compress="zstd", source="deflate"):
            out = os.path.join(work, "out")
            shutil.rmtree(out, ignore_errors=True)
            wait_encoders_gone()
            with ProcessMonitor(interval=0.2, memory=memory) as mon:
                t0 = time.perf_counter()
                r = encode(rasters[source, n], out, model=f"rayvit_null_d{d}_p16", pretrained=False, size=size,
                           dtype=dtype, progress=False, address=address, format=fmt, compress=compress)
                elapsed = time.perf_counter() - t0
            return r, elapsed, mon

        run(tiles[0], widths[0], dtypes[0])     # warm-up: one-time imports and Ray workers
        for d in widths:
            both = ("float16", "int8") if d == 768 else ()      # both formats; int8 only at D = 768
            cases = [(t, f, "zstd", "deflate") for t in dtypes if t != "int8" or d == 768
                     for f in (formats if t in both else ("gtiff",))]
            if d == 768 and "float16" in dtypes:                # the codecs at either end
                cases += [("float16", "gtiff", c, i) for c, i in (("none", "deflate"), ("zstd", "zstd"), ("none", "zstd"))]
            for dtype, fmt, compress, source in cases:
                runs = []
                for n in tiles:
                    r, elapsed, mon = run(n, d, dtype, fmt=fmt, compress=compress, source=source)
                    runs.append((r.tiles_encoded, elapsed, mon.cpu_by_role(), mon.machine_cpu_s))
                (n0, e0, c0, m0), (n1, e1, c1, m1) = runs[0], runs[-1]
                per_tile = {role: 1000 * (c1[role] - c0[role]) / (n1 - n0) for role in c0}
                total = sum(per_tile.values())
                machine = 1000 * (m1 - m0) / (n1 - n0)
                row = {"width": d, "dtype": dtype, "format": fmt, "compress": compress, "input": source,
                       "ms_per_tile": per_tile,
                       "total_ms_per_tile": total, "machine_ms_per_tile": machine,
                       "tiles_per_s": (n1 - n0) / max(e1 - e0, 1e-9), "elapsed_s": [e0, e1]}
                rows.append(row)
                target = (d, dtype, fmt, compress, source) == (768, "float16", "gtiff", "zstd", "deflate")
                codecs = "" if (compress, source) == ("zstd", "deflate") else f" (--compress {compress}, {source} input)"
                print(f"bench pipeline: D={d} {dtype} {fmt}{codecs}: {total:.2f} CPU-ms per tile "
                      + ("(target <= %.1f at D=768 float16) " % TARGET_MS if target else "")
                      + "= " + ", ".join(f"{k} {v:.2f}" for k, v in per_tile.items())
                      + f"; the whole machine (/proc/stat) {machine:.2f}"
                      + f"; marginal {row['tiles_per_s']:.0f} tiles/s on {int(cpus)} CPUs "
                      f"({n0} tiles in {e0:.1f} s, {n1} in {e1:.1f} s; {os.path.basename(r.output)})", flush=True)
            if d == 768 and "float16" in dtypes:
                window, features = transport_ms(math.ceil(math.sqrt(tiles[-1])) * size, size, bands, d, "float16")
                rows.append({"width": d, "transport_ms_per_tile": {"window": window, "features": features}})
                print(f"bench pipeline: D={d} float16: transport (ray.put in the driver, best of 5) of a block's "
                      f"window {window:.2f} and of its features {features:.2f} CPU-ms per tile (booked above under "
                      "read tasks and device actors)", flush=True)
            _, _, mem = run(tiles[-1], d, dtypes[0], memory=True)
            rows.append({"width": d, "peak_driver_rss_mb": mem.driver / 2**20})
            print(f"bench pipeline: D={d}: peak driver RSS {mem.driver / 2**20:.0f} MB ({tiles[-1]} tiles, "
                  f"{dtypes[0]}; an untimed run)", flush=True)
    return rows
