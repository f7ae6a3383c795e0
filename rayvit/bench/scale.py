"""``rayvit bench scale``: cost against the number of input files, for the same pixels.

The same ``side`` x ``side`` px, 3-band uint8 area (random pixels, EPSG:32633, 10 m) is written
as 1 file and as n files of equal squares; each is encoded by a ``rayvit encode`` process of its
own (the whole command, as a user runs it) with the null encoder (D = 768, float16,
``--normalize none``) twice: the first run reads every file's header and writes the sources
index, the second finds it (the model's plan is kept by a dry run before them all). Per run:
wall time, the phases from the sidecar (planning, Ray
start, actor start, encoding, commit), what follows the commit (report, shut-down) and the
driver's peak RSS. Then ``rayvit encode --dry-run`` over a sources index of ``index_rows``
files (written here; the files need not exist: a dry run given an index opens none).
"""

from __future__ import annotations

import json
import math
import os
import shutil
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


def bench_s3(work: str, url: str, data: np.ndarray, files, env: dict, base: float, describe_files: int) -> dict:
    """The object-store half: ``describe_files`` small files on the S3 server at ``url``,
    their headers read concurrently (files/s, against one at a time on a subset), then the
    area as each count of ``files`` read from there by whole ``rayvit encode`` commands
    (wall against ``base``, the local single file)."""
    from ..io import sources, storage
    from ..io.mosaic import open_mosaic

    fs = storage.fs_for(url)
    rows = {}
    k = math.isqrt(describe_files)
    small = write_area(os.path.join(work, f"s3_describe_{k * k}"), data[:, :16 * k, :16 * k], k * k)
    fs.put(os.path.dirname(small) + "/", storage.join(url, "describe") + "/", recursive=True)
    pattern = storage.join(url, "describe", "part_*.tif")
    saved = sources.THREADS, os.environ.get("RAYVIT_CACHE")
    os.environ["RAYVIT_CACHE"] = env["RAYVIT_CACHE"]            # the bench's cold cache, here too
    try:
        t0 = time.perf_counter()
        mosaic = open_mosaic([pattern])
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        open_mosaic([pattern])                 # again: from their sources index (ETags from the listing)
        again = time.perf_counter() - t0
        n = len(mosaic.sources)
        few = [s.url for s in mosaic.sources[:min(n, 200)]]
        sources.THREADS = 1
        t0 = time.perf_counter()
        open_mosaic(few)
        one = time.perf_counter() - t0
    finally:
        sources.THREADS = saved[0]
        if saved[1] is None:
            os.environ.pop("RAYVIT_CACHE")
        else:
            os.environ["RAYVIT_CACHE"] = saved[1]
    rows["describe"] = {"files": n, "wall_s": wall, "files_per_s": n / wall, "index_found_s": again,
                        "one_at_a_time_files_per_s": len(few) / one}
    print(f"bench scale: S3 ({url}): {n} objects described in {wall:.1f} s ({n / wall:.0f} files/s, "
          f"{sources.processes(n)} process(es) x {sources.THREADS} at once; one at a time: {len(few) / one:.0f} "
          f"files/s); again, from their sources index: {again:.1f} s", flush=True)
    for count in files:
        local = write_area(os.path.join(work, f"files_{count}"), data, count)
        fs.put(os.path.dirname(local) + "/", storage.join(url, f"files_{count}") + "/", recursive=True)
        out = os.path.join(work, "out_s3")
        inputs = storage.join(url, f"files_{count}", "part_*.tif")
        wall, rss, _ = run_command(["encode", inputs, "-o", out, *ENCODE], env)
        with open(os.path.join(out, "features.json")) as fh:
            t = json.load(fh)["timings"]
        rows[count] = {"wall_s": wall, "planning_s": t.get("planning_s", 0.0), "encoding_s": t.get("encoding_s", 0.0)}
        print(f"bench scale: {count:>6} file(s) on S3: wall {wall:6.1f} s (x{wall / base:.2f} of 1 local file) - "
              f"planning {rows[count]['planning_s']:.1f}, encoding {rows[count]['encoding_s']:.1f}; "
              f"driver peak RSS {rss:.0f} MB", flush=True)
    return rows


def bench_scale(files=(1, 1024, 4096), side: int = 8192, index_rows: int = 100_000, work: str | None = None,
                products=(25, 10_000), s3_url: str | None = None, s3_files=(1, 1024),
                describe_files: int = 10_000) -> dict:
    from ..io import sources

    with workdir(work) as work:
        env = dict(os.environ, RAYVIT_CACHE=os.path.join(work, "cache"))   # a cold index per bench
        shutil.rmtree(env["RAYVIT_CACHE"], ignore_errors=True)               # (also in a --workdir reused)
        data = np.random.default_rng(0).integers(0, 255, (3, side, side), dtype=np.uint8)
        print(f"bench scale: {side} x {side} px, 3 bands uint8 as {', '.join(map(str, files))} file(s); "
              "rayvit encode, null encoder D = 768 float16, --normalize none; each twice (sources index "
              "built, then found)", flush=True)
        # the model's plan is kept between runs (encode.plan.model_info): kept before the timed
        # runs, so that they differ only in the files and their sources index
        run_command(["encode", write_area(os.path.join(work, "files_1"), data, 1), "-o", os.path.join(work, "dry"),
                     *ENCODE, "--dry-run"], env)
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
        rows["products"] = bench_products(work, products)
        if s3_url:
            rows["s3"] = bench_s3(work, s3_url, data, s3_files, env, base, describe_files)
        return rows


PRODUCT_BLOCK = 64       # px per block side of the bench's products
OPEN_READ = """
import sys, time
t0 = time.perf_counter()
if sys.argv[1] == "gdal":
    import rasterio
    from rasterio.windows import Window
    with rasterio.open(sys.argv[2]) as ds:
        data = ds.read(window=Window(0, 0, 256, 256))
elif sys.argv[1] == "xarray":
    import xarray
    data = xarray.open_zarr(sys.argv[2])["features"][:, :256, :256].values
else:
    from rayvit.analysis.source import open_input
    data = open_input(sys.argv[2]).read(0, 0, 256, 256)[0]
assert data.shape[1:] == (256, 256)
print(time.perf_counter() - t0)
"""


def write_product(directory: str, blocks: int, bands: int = 768, format: str = "gtiff") -> str:
    """A committed float16 block product of ``blocks`` (a square number) blocks of
    :data:`PRODUCT_BLOCK` px and ``bands`` bands, as encode writes it (:class:`ProductWriter`:
    blocks, manifest, tile index; or with ``format="zarr"`` shards in a Zarr store). Block
    (0, 0) is written by the block writer; the others are byte copies of it, a GeoTIFF's with its
    own origin patched into the tie point, a shard as it is (it holds no position): writing 10^4
    768-band blocks would take ~25 min on 2 cores. Returns the product's entry point."""
    from ..grid import Block
    from ..io.mosaic import Grid
    from ..io.writer import ProductWriter

    k, side = math.isqrt(blocks), PRODUCT_BLOCK
    grid = Grid("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), k * side, k * side)
    writer = ProductWriter(directory, grid, bands, [f"feature_{i:04d}" for i in range(1, bands + 1)], "float16",
                           format=format, block_size=side)
    writer.start("bench", {}, overwrite=True)
    data = (np.random.default_rng(0).standard_normal((bands, 1, 1)) * np.ones((1, side, side))).astype(np.float16)
    origin = Block(0, 0, 0, 0, side, side)
    first = writer.block_writer().write(origin, data, np.ones((side, side), bool))
    copy = _shard_copier(writer, origin) if format == "zarr" else _tiff_copier(writer, first, grid)
    done, records = [], []
    for by in range(k):
        for bx in range(k):
            block = Block(by, bx, by * side, bx * side, side, side)
            done.append(block)
            records.append({**first, "by": by, "bx": bx,
                            "file": first["file"] if (by, bx) == (0, 0) else copy(block)})
    writer.record(records)
    final = writer.assemble(done, single_file=False)
    writer.seal(final, {"stage": "bench"})
    return final


def _tiff_copier(writer, first: dict, grid):
    """Copies of the first GeoTIFF block with their own origin in the tie point; each returns
    its file's name in the manifest."""
    import struct

    x0, y0, res = grid.transform[2], grid.transform[5], grid.transform[0]
    with open(os.path.join(writer.block_dir, first["file"]), "rb") as fh:
        template = bytearray(fh.read())
    at = [template.find(struct.pack("<d", v)) for v in (x0, y0)]
    if min(at) < 0 or any(template.count(struct.pack("<d", v)) != 1 for v in (x0, y0)):
        raise RuntimeError("bench scale: the block template's tie point is not where expected")

    def copy(block) -> str:
        struct.pack_into("<d", template, at[0], x0 + block.col * res)
        struct.pack_into("<d", template, at[1], y0 - block.row * res)
        with open(os.path.join(writer.block_dir, f"{block.name}.tif"), "wb") as fh:
            fh.write(template)
        return f"{block.name}.tif"
    return copy


def _shard_copier(writer, origin):
    """Copies of the first Zarr shard; each returns its name in the manifest."""
    import shutil

    from ..io import chunked

    template = os.path.join(writer.zarr_store, chunked.shard_file(origin))

    def copy(block) -> str:
        path = os.path.join(writer.zarr_store, chunked.shard_file(block))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(template, path)
        return f"features.zarr/{chunked.shard_file(block)}"
    return copy


def time_open_read(path: str, how: str, repeat: int = 3) -> float:
    """Median seconds to open the product and read a 256 x 256 window of all its bands, each
    time in a new process (``how``: ``gdal``, rasterio on the entry point; ``rayvit``, the
    analysis stages' reader)."""
    times = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", OPEN_READ, how, path], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.split()[-1]))
    return float(np.median(times))


def bench_products(work: str, counts=(25, 10_000)) -> dict:
    """Open + read of a window of a block product (GTI) and of the same as a Zarr store."""
    try:
        import xarray  # noqa: F401
        import zarr  # noqa: F401
        zarr_too = True
    except ImportError:
        zarr_too = False
    rows = {}
    for n in counts:
        t0 = time.perf_counter()
        path = write_product(os.path.join(work, f"product_{n}"), n)
        made = time.perf_counter() - t0
        rows[n] = {how: time_open_read(path, how) for how in ("gdal", "rayvit")}
        if zarr_too:
            store = write_product(os.path.join(work, f"zarr_{n}"), n, format="zarr")
            rows[n] |= {f"zarr_{how}": time_open_read(store, how) for how in ("xarray", "rayvit")}
        print(f"bench scale: product of {n:>6} blocks x 768 bands (written in {made:.0f} s, index "
              f"{os.path.getsize(path) / 2**20:.1f} MB): open + read 256 x 256 px: "
              f"GDAL {rows[n]['gdal'] * 1000:.0f} ms, rayvit {rows[n]['rayvit'] * 1000:.0f} ms"
              + (f"; as Zarr: xarray {rows[n]['zarr_xarray'] * 1000:.0f} ms, "
                 f"rayvit {rows[n]['zarr_rayvit'] * 1000:.0f} ms" if zarr_too else ""), flush=True)
    if len(counts) > 1:
        lo, hi = rows[counts[0]], rows[counts[-1]]
        print(f"bench scale: {counts[-1]} against {counts[0]} blocks: GDAL x{hi['gdal'] / lo['gdal']:.2f}, "
              f"rayvit x{hi['rayvit'] / lo['rayvit']:.2f} (target <= 2)"
              + (f"; Zarr: xarray x{hi['zarr_xarray'] / lo['zarr_xarray']:.2f}, "
                 f"rayvit x{hi['zarr_rayvit'] / lo['zarr_rayvit']:.2f}" if zarr_too else ""), flush=True)
    return rows
