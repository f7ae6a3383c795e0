"""``rayvit bench analysis``: PCA and KMeans time and memory against pixel count, and
scikit-learn in memory on a subset."""

from __future__ import annotations

import os
import time

import numpy as np

from .monitor import ProcessMonitor, workdir


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
                   kmeans_iter: int = 10, sklearn_pixels: int = 500_000, work: str | None = None,
                   address: str | None = None) -> dict:
    """Time and peak memory of rayvit PCA (3 components) and KMeans (k) at several raster sizes,
    and of scikit-learn single-process on an in-memory subset, scaled per pixel."""
    import rasterio
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from ..analysis.cluster import cluster
    from ..analysis.reduce import reduce
    from ..runtime import init_ray

    kparams = {"max_iter": kmeans_iter, "tol": 0.0}
    with workdir(work) as work:
        init_ray(address)
        results = {"rayvit": [], "sklearn": {}}
        for scale in scales:
            n = int(pixels * scale)
            raster = os.path.join(work, f"features_{n}.tif")
            if not os.path.exists(raster):
                t0 = time.perf_counter()
                make_feature_raster(raster, n, bands)
                print(f"bench: generated {raster} ({n} px x {bands} bands float16, "
                      f"{os.path.getsize(raster) / 2**30:.1f} GiB) in {time.perf_counter() - t0:.0f} s", flush=True)
            for name, run in (("PCA", lambda raster=raster: reduce(raster, os.path.join(work, "pca"), n_components=3,
                                                     overwrite=True, progress=False, address=address)),
                              ("KMeans", lambda raster=raster: cluster(raster, os.path.join(work, "km"), n_clusters=k,
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
