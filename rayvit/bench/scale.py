"""``rayvit bench scale``: cost against the number of input files, for the same pixels.

The same ``side`` x ``side`` px, 3-band uint8 area (random pixels, EPSG:32633, 10 m) is written
as 1 file and as n files of equal squares; each is encoded by a ``rayvit encode`` process of its
own (the whole command, as a user runs it) with the null encoder (D = 768, float16,
``--normalize none``) twice: the first run reads every file's header and writes the sources
index, the second finds it. Per run: wall time, the phases from the sidecar (planning, Ray
start, actor start, encoding, commit), what follows the commit (report, shut-down) and the
driver's peak RSS. Then ``rayvit encode --dry-run`` over a sources index of ``index_rows``
files (written here; the files need not exist: a dry run given an index opens none).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from .monitor import workdir

ENCODE = ["--model", "rayvit_null_d768_p16", "--no-pretrained", "--size", "224", "--dtype", "float16",
          "--normalize", "none", "--quiet", "--overwrite"]


def write_area(directory: str, data: np.ndarray, n: int) -> str:
    """``data`` (bands, side, side) as ``n`` (a square number) GeoTIFFs in ``directory``; a glob of them."""
    import rasterio
    from rasterio.transform import from_origin

    k = math.isqrt(n)
    if k * k != n:
        raise ValueError(f"bench scale: {n} files do not make a square; give square numbers (1, 1024, 4096, ...).")
    side = data.shape[1]
    step = side // k
    os.makedirs(directory, exist_ok=True)
    tiles = dict(tiled=True, blockxsize=min(step, 512), blockysize=min(step, 512)) if step % 16 == 0 else {}
    profile = dict(driver="GTiff", dtype=data.dtype.name, count=data.shape[0], crs="EPSG:32633", compress="deflate",
                   width=step, height=step, **tiles)
    for i in range(k):
        for j in range(k):
            path = os.path.join(directory, f"part_{i:04d}_{j:04d}.tif")
            if not os.path.exists(path):
                with rasterio.open(path, "w", transform=from_origin(500000 + j * step * 10, 4000000 - i * step * 10,
                                                                    10, 10), **profile) as dst:
                    dst.write(data[:, i * step:(i + 1) * step, j * step:(j + 1) * step])
    return os.path.join(directory, "part_*.tif")


def run_command(args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """``(wall seconds, driver peak RSS in MB, stdout)`` of one ``rayvit`` process."""
    import psutil

    exe = os.path.join(os.path.dirname(sys.executable), "rayvit")
    t0 = time.perf_counter()
    proc = psutil.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"bench scale: rayvit {' '.join(args[:2])} failed: {err[-2000:]}")
    return time.perf_counter() - t0, peak / 2**20, out


def write_synthetic_index(path: str, rows: int, step: int = 128) -> None:
    """A sources index of ``rows`` (rounded down to a square) 128 x 128 px files, as if described."""
    from rasterio.crs import CRS

    from ..io import sources
    from ..io.mosaic import Source

    k = math.isqrt(rows)
    wkt = CRS.from_epsg(32633).to_wkt()
    sources.write_index(path, [
        (Source(os.path.join(os.path.dirname(path), f"virtual_{i:04d}_{j:04d}.tif"), wkt,
                (10.0, 0.0, 500000.0 + j * step * 10, 0.0, -10.0, 4000000.0 - i * step * 10), step, step, 3,
                "uint8", None, ("red", "green", "blue"), (1.0,) * 3, (0.0,) * 3), (0, 0))
        for i in range(k) for j in range(k)])


def bench_scale(files=(1, 1024, 4096), side: int = 8192, index_rows: int = 100_000, work: str | None = None) -> dict:
    from ..io import sources

    with workdir(work) as work:
        env = dict(os.environ, RAYVIT_CACHE=os.path.join(work, "cache"))   # a cold index per bench
        data = np.random.default_rng(0).integers(0, 255, (3, side, side), dtype=np.uint8)
        print(f"bench scale: {side} x {side} px, 3 bands uint8 as {', '.join(map(str, files))} file(s); "
              "rayvit encode, null encoder D = 768 float16, --normalize none; each twice (sources index "
              "built, then found)", flush=True)
        rows, base = {}, None
        for n in files:
            t0 = time.perf_counter()
            pattern = write_area(os.path.join(work, f"files_{n}"), data, n)
            made = time.perf_counter() - t0
            for attempt in ("index built", "index found"):
                out = os.path.join(work, "out")
                wall, rss, _ = run_command(["encode", pattern, "-o", out, *ENCODE], env)
                with open(os.path.join(out, "features.json")) as fh:
                    t = json.load(fh)["timings"]
                after = wall - t["total_s"]
                row = {"files": n, "run": attempt, "wall_s": wall, "driver_rss_mb": rss, "after_commit_s": after,
                       **{k: t.get(k, 0.0) for k in ("planning_s", "ray_start_s", "actor_start_s", "encoding_s",
                                                      "commit_s")}}
                rows[(n, attempt)] = row
                base = base or wall
                print(f"bench scale: {n:>6} file(s), {attempt}: wall {wall:6.1f} s (x{wall / base:.2f} of 1 file) - "
                      f"planning {row['planning_s']:.1f}, Ray start {row['ray_start_s']:.1f}, actor start "
                      f"{row['actor_start_s']:.1f}, encoding {row['encoding_s']:.1f}, commit {row['commit_s']:.1f}, "
                      f"then report and exit {after:.1f} s; driver peak RSS {rss:.0f} MB"
                      + (f" (files written in {made:.0f} s)" if attempt == "index built" else ""), flush=True)
        index = os.path.join(work, f"index_{index_rows}{sources.SUFFIX}")
        t0 = time.perf_counter()
        write_synthetic_index(index, index_rows)
        written = time.perf_counter() - t0
        wall, rss, out = run_command(["encode", index, "-o", os.path.join(work, "dry"), *ENCODE, "--dry-run"], env)
        tiles = next((line for line in out.splitlines() if line.startswith("tiles:")), "")
        print(f"bench scale: dry run over a sources index of {math.isqrt(index_rows) ** 2} files (written in "
              f"{written:.1f} s): wall {wall:.1f} s, driver peak RSS {rss:.0f} MB; {tiles}", flush=True)
        rows["dry_run"] = {"files": math.isqrt(index_rows) ** 2, "wall_s": wall, "driver_rss_mb": rss}
        return rows
