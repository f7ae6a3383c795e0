"""``rayvit bench embeddings``: table rows/s, search and change pixels/s against a
single-process numpy loop over the same file; which search scorer separates better; the
int8 error and size saving against float32."""

from __future__ import annotations

import os
import time

import numpy as np

from .analysis import make_feature_raster
from .monitor import workdir

LOOP_WINDOW = 256


def numpy_loop(paths: list[str], fn) -> float:
    """Seconds a single process takes to read ``paths`` window by window and apply
    ``fn(arrays, valid)``: the baseline (the same maths, no Ray, no output files)."""
    import rasterio

    t0 = time.perf_counter()
    sets = [rasterio.open(p) for p in paths]
    height, width = sets[0].height, sets[0].width
    for r in range(0, height, LOOP_WINDOW):
        for c in range(0, width, LOOP_WINDOW):
            win = ((r, min(r + LOOP_WINDOW, height)), (c, min(c + LOOP_WINDOW, width)))
            data = [ds.read(window=win, masked=True) for ds in sets]
            valid = np.logical_and.reduce([~np.ma.getmaskarray(d).any(axis=0) for d in data])
            fn([np.ma.getdata(d).astype(np.float32) for d in data], valid)
    for ds in sets:
        ds.close()
    return time.perf_counter() - t0


def scorer_separation(seeds: int = 10, bands: int = 64, examples: int = 5) -> dict:
    """Mean ROC AUC of each scorer on generated features: a target class among several
    background classes (one of them close to the target), ``examples`` positives and
    negatives drawn at random."""
    from sklearn.metrics import roc_auc_score

    from ..analysis.search import fit_scorer

    auc = {"cosine": [], "linear": []}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(6, bands))
        centres[1] = centres[0] + 0.6 * rng.normal(size=bands)     # a confuser near the target
        labels = rng.integers(0, 6, size=20_000)
        x = centres[labels] + rng.normal(size=(len(labels), bands)) + 3.0   # a shared offset, as ViT features
        truth = labels == 0
        pos = x[rng.choice(np.flatnonzero(truth), examples, replace=False)]
        neg = x[rng.choice(np.flatnonzero(~truth), examples, replace=False)]
        for kind in auc:
            auc[kind].append(roc_auc_score(truth, fit_scorer(pos, neg, kind, seed).apply(x)[:, 0]))
    return {kind: float(np.mean(v)) for kind, v in auc.items()}


def quantization_error(float_path: str, quantized_path: str) -> dict:
    """Error of a quantised feature raster against its float original: mean absolute error,
    worst band's mean absolute error relative to that band's standard deviation, and sizes."""
    import rasterio

    with rasterio.open(float_path) as ds:
        ref = ds.read(masked=True).astype(np.float64)
    with rasterio.open(quantized_path) as ds:
        codes, scale, offset = ds.read(masked=True), np.array(ds.scales), np.array(ds.offsets)
    back = codes.astype(np.float64) * scale[:, None, None] + offset[:, None, None]
    err = np.abs(back - ref)
    per_band = err.reshape(len(err), -1).mean(axis=1) / ref.reshape(len(ref), -1).std(axis=1)

    def size(path):
        folder = os.path.dirname(path)
        return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder)
                   for f in files if f.endswith((".tif", ".vrt")))

    return {"mae": float(err.mean()), "worst_band_relative": float(per_band.max()),
            "float_bytes": size(float_path), "quantized_bytes": size(quantized_path)}


def bench_embeddings(pixels: int = 10_000_000, bands: int = 384, work: str | None = None,
                     address: str | None = None) -> dict:
    """Everything in one run, printed as it goes; returns the figures."""
    import geopandas as gpd
    from shapely.geometry import Point

    from ..analysis.change import change, cosine_distance
    from ..analysis.search import fit_scorer
    from ..analysis.table import pool_cells, table
    from ..runtime import init_ray

    out: dict = {}
    separation = scorer_separation()
    print(f"search scorers, mean ROC AUC on generated data (10 seeds, 5+5 examples): "
          f"cosine {separation['cosine']:.3f}, linear {separation['linear']:.3f}")
    out["scorer_auc"] = separation
    with workdir(work) as work:
        a, b = os.path.join(work, "a.tif"), os.path.join(work, "b.tif")
        make_feature_raster(a, pixels, bands, seed=0)
        make_feature_raster(b, pixels, bands, seed=1)
        n = pixels
        init_ray(address)
        rng = np.random.default_rng(0)
        points = gpd.GeoDataFrame(geometry=[Point(500000 + 10 * rng.uniform(0, 4096), 5000000 - 10 * rng.uniform(0, 100))
                                            for _ in range(5)], crs="EPSG:32633")
        vectors = os.path.join(work, "pos.gpkg")
        points.to_file(vectors)
        runs = {
            "table": ([a], lambda: table(a, os.path.join(work, "t"), pool="tile", tile=16, progress=False),
                      lambda d, v: pool_cells(d[0], v, 16)),
            "search": ([a], lambda: search_run(a, vectors, os.path.join(work, "s")),
                       lambda d, v: fit_scorer(d[0][:, v][:, :5].T, None).apply(d[0][:, v].T)),
            "change": ([a, b], lambda: change(a, b, os.path.join(work, "c"), threshold=10.0, progress=False),
                       lambda d, v: cosine_distance(d[0][:, v].T, d[1][:, v].T)),
        }
        for name, (inputs, ours, baseline) in runs.items():
            t0 = time.perf_counter()
            result = ours()
            took = time.perf_counter() - t0
            loop = numpy_loop(inputs, baseline)
            units = (result.rows, "rows") if name == "table" else (n, "pixels")
            out[name] = {"rayvit_s": took, "numpy_s": loop, f"{units[1]}_per_s": units[0] / took,
                         "numpy_per_s": units[0] / loop, "ratio": loop / took}
            print(f"{name}: {units[0] / took:,.0f} {units[1]}/s (whole command, {took:.1f} s) vs numpy loop "
                  f"{units[0] / loop:,.0f}/s ({loop:.1f} s): x{loop / took:.2f}")
    return out


def search_run(raster: str, vectors: str, output: str):
    from ..analysis.search import search

    return search(raster, vectors, output, top_k_hits=100, exclude_radius=3, progress=False)
