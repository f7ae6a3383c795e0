"""Shared fixtures: one local Ray for the session, tiny seeded rasters, real IAMAP data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # a hub lookup fails at once, offline
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_RECORD_ACTOR_TASK_LOGGING", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# the sources indexes that runs keep (rayvit.io.sources): this session's own, not the user's
os.environ.setdefault("RAYVIT_CACHE", tempfile.mkdtemp(prefix="rayvit-cache-"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import rasterio  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IAMAP = ROOT.parent / "shared" / "data" / "iamap"
UTM = "EPSG:32633"
X0, Y0, RES = 500000.0, 4000000.0, 10.0


def write_raster(path, data, transform=None, crs=UTM, nodata=None, **profile):
    """Write ``data`` (bands, rows, cols) as a GeoTIFF; returns the path as str."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    transform = transform or from_origin(500000.0, 4000000.0, 10.0, 10.0)
    with rasterio.open(path, "w", driver=profile.pop("driver", "GTiff"), width=data.shape[2],
                       height=data.shape[1], count=data.shape[0], dtype=data.dtype, crs=crs,
                       transform=transform, nodata=nodata, **profile) as dst:
        dst.write(data)
    return str(path)


def alphaearth_raster(tmp_path):
    """A 64-band AlphaEarth-style int8 raster (codes of unit vectors around two directions,
    a corner of -128 no data) and the float raster its documented de-quantisation gives,
    computed here by hand: sign(v) * (v / 127.5)^2."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 30, 40)) * 0.2
    x[0, :, :20] += 1.0
    x[1, :, 20:] += 1.0
    x /= np.linalg.norm(x, axis=0, keepdims=True)
    codes = np.clip(np.round(np.sign(x) * np.sqrt(np.abs(x)) * 127.5), -127, 127).astype(np.int8)
    codes[:, :4, :6] = -128
    by_hand = np.empty(codes.shape, np.float32)
    for idx, v in np.ndenumerate(codes):
        by_hand[idx] = np.nan if codes[(slice(None),) + idx[1:]].min() == -128 else \
            np.float32((1 if v > 0 else -1 if v < 0 else 0) * (v / 127.5) ** 2)
    return write_raster(tmp_path / "ae.tif", codes), by_hand


def tessera_tile(tmp_path):
    """A TESSERA tile in geotessera's local layout (int8 codes (H, W, 128), per-pixel float32
    scales with a corner of 0 = no data, the landmask GeoTIFF giving CRS and transform), and
    the float raster ``code * scale`` computed here by hand, NaN where the scale is 0."""
    rng = np.random.default_rng(2)
    h, w = 24, 36
    x = rng.normal(size=(h, w, 128)) * 0.3
    x[:, :18, 0] += 2.0
    x[:, 18:, 1] += 2.0
    scales = (np.abs(x).max(axis=2) / 127).astype(np.float32)
    codes = np.clip(np.round(x / scales[..., None]), -127, 127).astype(np.int8)
    scales[:3, :5] = 0
    grid = tmp_path / "global_0.1_degree_representation" / "2024" / "grid_0.15_52.05"
    grid.mkdir(parents=True)
    np.save(grid / "grid_0.15_52.05.npy", codes)
    np.save(grid / "grid_0.15_52.05_scales.npy", scales)
    (tmp_path / "global_0.1_degree_tiff_all").mkdir()
    write_raster(tmp_path / "global_0.1_degree_tiff_all" / "grid_0.15_52.05.tiff", np.ones((1, h, w), np.uint8))
    by_hand = np.empty((128, h, w), np.float32)
    for (r, c, b), v in np.ndenumerate(codes):
        by_hand[b, r, c] = np.nan if scales[r, c] == 0 else np.float32(v) * scales[r, c]
    return str(grid / "grid_0.15_52.05.npy"), by_hand


def tessera_store(tmp_path, zones=("utm33",)):
    """The TESSERA tile of :func:`tessera_tile` in TESSERA's Zarr layout (geotessera's
    ``geotessera/zarr.py``: a group per UTM zone holding ``embeddings`` int8 (time, band, y, x)
    and ``scales`` float32 (time, y, x), sharded; ``time`` the years; the root's ``geoemb:``
    attributes declaring per-pixel scales; the zone's ``proj:code`` and ``spatial:transform``).
    2024 holds the tile (its no-data corner as TESSERA's sentinels: NaN water, +inf no data
    yet), 2023 other codes. Returns the store's path and the 2024 floats computed by hand."""
    import zarr
    from zarr.codecs import BloscCodec

    path, by_hand = tessera_tile(tmp_path)
    codes = np.load(path)
    scales = np.load(path[:-4] + "_scales.npy")
    scales[:3, :2], scales[:3, 2:5] = np.nan, np.inf
    h, w, b = codes.shape
    store = str(tmp_path / "tessera.zarr")
    root = zarr.open_group(store, mode="w", zarr_format=3)
    root.attrs.update({"geoemb:type": "pixel", "geoemb:dimensions": b, "geoemb:data_type": "int8",
                       "geoemb:quantization": {"method": "per_pixel_scale", "original_dtype": "float32",
                                               "quantized_dtype": "int8",
                                               "scale": {"type": "array", "array_name": "scales", "nodata": "+inf"}}})
    blosc = BloscCodec(cname="zstd", clevel=3)
    for zone in zones:
        g = root.create_group(zone)
        emb = g.create_array("embeddings", shape=(2, b, h, w), chunks=(1, b, 8, 8), shards=(1, b, 16, 16),
                             dtype="int8", fill_value=0, compressors=blosc, dimension_names=["time", "band", "y", "x"])
        sc = g.create_array("scales", shape=(2, h, w), chunks=(1, 8, 8), shards=(1, 16, 16), dtype="float32",
                            fill_value=np.float32("inf"), compressors=blosc, dimension_names=["time", "y", "x"])
        emb[1] = np.moveaxis(codes, -1, 0)
        emb[0] = -np.moveaxis(codes, -1, 0)[::-1]
        sc[1], sc[0] = scales, np.abs(scales[::-1])
        for name, values in (("x", 500000.0 + (np.arange(w) + 0.5) * 10), ("y", 4000000.0 - (np.arange(h) + 0.5) * 10),
                             ("time", np.array([2023, 2024], np.int32)), ("band", np.arange(b, dtype=np.int32))):
            g.create_array(name, shape=values.shape, dtype=values.dtype, fill_value=0, dimension_names=[name])[:] = values
        g.attrs.update({"proj:code": "EPSG:32633", "spatial:dimensions": ["y", "x"], "spatial:shape": [h, w],
                        "spatial:transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0]})
    zarr.consolidate_metadata(store)
    return store, by_hand


def analysed(src, vectors, label, out, n_clusters):
    """The maps cluster, similarity (by ``label``), search and classify make of ``src`` (under
    ``out``): their output rasters' pixels, for runs on two forms of the same embeddings."""
    from rayvit import classify, cluster, search, similarity

    q = {"progress": False}
    paths = [cluster(src, out / "c", n_clusters=n_clusters, **q).output,
             similarity(src, vectors, out / "s", by=label, **q).output,
             search(src, vectors, out / "q", top_k_hits=3, **q).output,
             classify(src, vectors, out / "k", label=label, cv="none", **q).output]
    return [read(p)[0] for p in paths]


def cut_into_four(tmp_path, data, nodata=None):
    """Cut ``data`` into 4 files with uneven cuts; returns their paths."""
    _, h, w = data.shape
    ry, rx = 37, 61
    paths = []
    for i, (r0, r1) in enumerate(((0, ry), (ry, h))):
        for j, (c0, c1) in enumerate(((0, rx), (rx, w))):
            paths.append(write_raster(tmp_path / f"part_{i}{j}.tif", data[:, r0:r1, c0:c1],
                                      from_origin(X0 + c0 * RES, Y0 - r0 * RES, RES, RES),
                                      nodata=nodata))
    return paths


def seeded_image(shape, seed=0, high=200, dtype="uint8"):
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


@pytest.fixture(scope="session", autouse=True)
def _background_first(request):
    """Before any test: the work that runs in a process of its own and that a selected test
    will wait for starts in the background (:mod:`background`), beside the first tests (unit
    tests, mostly on one core of two) rather than after them."""
    needed = {name for item in request.session.items for name in item.fixturenames}
    for fixture in ("quickstart_run", "umap_compiled"):
        if fixture in needed:
            request.getfixturevalue(fixture)


def readme_first_command() -> str:
    """The first command of the README's first bash block."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return block.strip().splitlines()[0]


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """The README's first command as a new user runs it: in a clean directory holding a copy
    of jobs/, in a shell, with a user's environment (no ``RAY_*``) and this test session's
    virtual environment standing in for the fresh ``.venv`` (its install steps are the CI's
    own: test_quickstart.py checks that). Started with the session (see
    :func:`_background_first`); ``.wait(timeout)`` gives its result. Returns (work dir, run)."""
    import shutil

    from background import Background
    work = tmp_path_factory.mktemp("fresh")
    shutil.copytree(ROOT / "jobs", work / "jobs")
    run = readme_first_command().rpartition(" && ")[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}   # as a user's shell
    command = run.replace(".venv/bin/", f"{Path(sys.executable).parent}/", 1)
    job = Background(command, tmp_path_factory.mktemp("quickstart-logs"), shell=True, cwd=work, env=env)
    yield work, job
    job.stop()


@pytest.fixture(scope="session")
def umap_compiled(tmp_path_factory):
    """umap-learn compiles its numba functions on first import (~15 s on 2 cores) and keeps
    them in numba's on-disk cache, as on a user's machine after their first UMAP run. A
    process of its own, started with the session (:func:`_background_first`), does that
    first import; ``.wait(timeout)`` waits for it."""
    from background import Background
    job = Background([sys.executable, "-c", "import umap"], tmp_path_factory.mktemp("umap-logs"))
    yield job
    job.stop()


@pytest.fixture(scope="session", autouse=True)
def _servers_before_ray(request):
    """The object-store emulators start before Ray when any selected test uses them: Ray's
    workers inherit the environment Ray started with, as they do a user's shell."""
    if any("stores" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("stores")


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the session, started by the product's own start-up
    (``rayvit.runtime.init_ray``, what ``rayvit`` does on a user's machine); every in-process
    command (:func:`run_cli`) and Python API call of the session joins it."""
    import ray

    from rayvit.runtime import init_ray
    init_ray()
    yield ray
    _save_worker_coverage(ray)
    ray.shutdown()


def _save_worker_coverage(ray) -> None:
    """Under coverage only (pytest-cov with ``patch = subprocess``, which measures every
    Python process): Ray's pool workers live as long as the session's Ray, and shutdown ends
    them before they save what they measured; ask the workers to save it first."""
    if "COVERAGE_PROCESS_CONFIG" not in os.environ:
        return

    @ray.remote(num_cpus=0)
    def save():
        import coverage
        cov = coverage.Coverage.current()
        if cov is not None:
            cov.save()
        return os.getpid()
    ray.get([save.remote() for _ in range(64)])


@pytest.fixture(scope="session")
def stores(tmp_path_factory):
    """One server per object store for the session: S3 (SeaweedFS `weed mini`), Google Cloud
    Storage (gcp-storage-emulator) and Azure Blob Storage (Azurite), each with the buckets
    ``rasters``, ``results``, ``emb`` and ``stac``, their credentials in this process's
    environment. ``stores[scheme]`` holds ``fs`` (an fsspec filesystem) and ``env``; a store
    that cannot start here is ``{"missing": reason}`` and its tests skip saying so."""
    from contextlib import ExitStack

    from emulators import azurite, gcs_emulator
    from s3server import weed_mini

    saved = dict(os.environ)
    out = {}
    with ExitStack() as stack:
        s3 = stack.enter_context(weed_mini(tmp_path_factory.mktemp("weed")))
        s3["env"] = {"AWS_ACCESS_KEY_ID": s3["key"], "AWS_SECRET_ACCESS_KEY": s3["secret"],
                     "AWS_ENDPOINT_URL": s3["endpoint"], "AWS_DEFAULT_REGION": "us-east-1"}
        out["s3"] = s3
        out["gs"] = stack.enter_context(gcs_emulator())
        try:
            out["az"] = stack.enter_context(azurite(tmp_path_factory.mktemp("azurite")))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            out["az"] = {"missing": f"Azurite (npm package azurite) could not start here: {exc}"}
        for scheme, store in out.items():
            if "fs" in store:
                os.environ.update(store["env"])
                for bucket in ("rasters", "results", "emb", "stac"):
                    store["fs"].mkdir(bucket)
                store["scheme"] = scheme
        yield out
    os.environ.clear()
    os.environ.update(saved)


def store(stores, scheme):
    """``stores[scheme]``, or a skip naming what is missing."""
    if "missing" in stores[scheme]:
        pytest.skip(stores[scheme]["missing"])
    return stores[scheme]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One local multi-node Ray cluster for the session (`ray start`: a 2-CPU head with the
    dashboard, for `ray job submit`, and a 1-CPU worker node), for the tests whose subject is
    several nodes. Drivers join it from processes of their own (``--address``). A test that
    kills the worker node starts another (``add_node``), so the two stay."""
    from raycluster import ray_cluster

    with ray_cluster(tmp_path_factory.mktemp("cluster"), node_cpus=(2, 1), dashboard=True) as c:
        yield c


FAULT_ARGS = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "64", "--stride", "32",
              "--block-size", "4", "--batch-size", "4", "--quiet"]
FAULT_BLOCKS = 4 * 8      # (256 / 16 / 4) x (512 / 16 / 4) blocks of 4 x 4 feature pixels


@pytest.fixture(scope="session")
def product(tmp_path_factory, ray_local):
    """The session's encoded product, for the tests that read one: real features of the IAMAP
    Sentinel-2 raster (vit_tiny, random weights) as ``float32`` (one COG), ``int8`` (blocks +
    VRT) and ``uint8`` (one COG), and ``table``: the float32 product as a GeoParquet table of
    4 x 4-px cells (``rayvit table --pool tile --tile 4``) and ``table_rows``, the row count
    the call reported. Built once."""
    from rayvit import encode, table

    if not IAMAP.is_dir():
        pytest.skip(f"real IAMAP data not found at {IAMAP} (../shared/data/iamap)")
    root = tmp_path_factory.mktemp("product")
    args = dict(model="vit_tiny_patch16_224", pretrained=False, progress=False)
    out = {"float32": encode(str(IAMAP / "test.tif"), root / "f32", **args).output,
           "int8": encode(str(IAMAP / "test.tif"), root / "i8", dtype="int8", blocks=True, block_size=14,
                          **args).output,
           "uint8": encode(str(IAMAP / "test.tif"), root / "u8", dtype="uint8", **args).output}
    cells = table(out["float32"], str(root / "cells"), pool="tile", tile=4, progress=False)
    return dict(out, table=root / "cells", table_rows=cells.rows)


def blocks_done(out: Path) -> int:
    """Blocks an encode into ``out`` has finished so far (its manifest's records)."""
    try:
        return len((out / "blocks" / "manifest.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory, ray_local):
    """A 256 x 512 px raster and the features of an uninterrupted run over it with
    ``FAULT_ARGS`` (32 blocks): what runs with a fault (a killed driver, actor or node) must
    give, byte for byte. Returns (raster, output directory)."""
    tmp = tmp_path_factory.mktemp("clean")
    path = write_raster(tmp / "big.tif", seeded_image((3, 256, 512), seed=5))
    r = run_cli("encode", path, "-o", tmp / "clean", *FAULT_ARGS)
    assert r.returncode == 0, r.stderr
    return path, tmp / "clean"


@pytest.fixture
def iamap():
    if not IAMAP.is_dir():
        pytest.skip(f"real IAMAP data not found at {IAMAP} (../shared/data/iamap)")
    return IAMAP


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds.transform, ds.descriptions


class Result:
    """What a command gave: ``returncode``, ``stdout``, ``stderr`` (as subprocess.run's)."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args, env=None):
    """Run a ``rayvit`` command in this process: ``rayvit.cli.main(argv)``, on the session's
    Ray (joined, or started by the product's own start-up if no test started it yet), with
    stdout and stderr captured. ``env``: this process's environment during the call (the
    driver's; Ray's workers keep the session's). An exception that escapes ``main`` is exit
    code 1 with its traceback on stderr, as the console script would give."""
    import contextlib
    import io
    import traceback

    from rayvit.cli import main
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    if env is not None:
        os.environ.clear()
        os.environ.update({k: str(v) for k, v in env.items()})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Result(code, out.getvalue(), err.getvalue())


def run_process(*args, timeout=600, **kwargs):
    """Run the real ``rayvit`` console script in a fresh process: for the tests whose subject
    is the process itself (a killed driver, a driver joining another cluster, start-up)."""
    exe = Path(sys.executable).with_name("rayvit")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
