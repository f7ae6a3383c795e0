"""``change``: per-pixel change between two feature rasters of the same area (two dates).

Band 1 of ``change.tif`` is the cosine distance ``1 - cos(a, b)`` of each pixel's two
embeddings (0: same direction, 2: opposite); with ``zscore`` band 2 is
``(d - mean) / std`` over the scene's valid pixels. Rasters on different grids are read
onto the first one's grid (nearest neighbour), cropped to their common extent. Hot spots
are the 4-connected areas where the distance reaches the threshold (default: the scene's
mean + 3 standard deviations), found block by block in the tasks that write ``change.tif``
and joined across block edges, written as GeoParquet polygons with their area and mean
change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..console import warn
from ..errors import InputError
from ..io.mosaic import Grid, Mosaic, _bounds_in
from .similarity import unit
from .source import BlockSource, open_input, source_sidecar
from .stage import AnalysisResult, Product, Stage, run

READ_WINDOW = 256     # the statistics pass: windows of both feature rasters (D bands each)
COMPARED = ("model", "preset", "layer", "weights_sha256")


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos`` of each row pair of ``a`` and ``b`` (n, D); NaN where either is zero."""
    return 1.0 - np.sum(unit(a) * unit(b), axis=1)


def crop(grid: Grid, bounds) -> Grid:
    """The part of ``grid`` (whole pixels) that covers ``bounds``, in its CRS."""
    a = grid.affine
    x0, y0, x1, y1 = bounds
    c0 = max(0, math.floor((x0 - a.c) / a.a + 1e-9))
    c1 = min(grid.width, math.ceil((x1 - a.c) / a.a - 1e-9))
    r0 = max(0, math.floor((a.f - y1) / -a.e + 1e-9))
    r1 = min(grid.height, math.ceil((a.f - y0) / -a.e - 1e-9))
    if c1 <= c0 or r1 <= r0:
        raise InputError("the two rasters do not overlap: there is no pixel to compare.")
    return Grid(grid.crs, (a.a, 0.0, a.c + c0 * a.a, 0.0, a.e, a.f + r0 * a.e), c1 - c0, r1 - r0)


@dataclass(frozen=True)
class Pair:
    """Two mosaics on one grid, read side by side: bands of ``a`` then of ``b``; a pixel is
    valid where both are."""

    a: Mosaic
    b: Mosaic

    @property
    def grid(self) -> Grid:
        return self.a.grid

    @property
    def count(self) -> int:
        return self.a.count + self.b.count

    @property
    def bands(self) -> tuple:
        return self.a.bands + self.b.bands

    @property
    def sources(self) -> tuple:
        return self.a.sources + self.b.sources

    dtype = "float32"

    def read(self, row: int, col: int, rows: int, cols: int):
        da, va = self.a.read(row, col, rows, cols)
        db, vb = self.b.read(row, col, rows, cols)
        return np.concatenate([da.astype(np.float32), db.astype(np.float32)]), va & vb


@dataclass
class ChangeRule:
    """The fitted change rule: what every block applies."""

    bands: int
    mean: float
    std: float
    zscore: bool = False

    @property
    def n_outputs(self) -> int:
        return 2 if self.zscore else 1

    def apply(self, x: np.ndarray) -> np.ndarray:
        d = cosine_distance(x[:, :self.bands], x[:, self.bands:])
        if not self.zscore:
            return d[:, None]
        return np.stack([d, (d - self.mean) / (self.std if self.std > 0 else 1.0)], axis=1)


def _distance_moments(pair: Pair, window, index):
    data, valid = pair.read(*window)
    x = data[:, valid].T.astype(np.float64)
    d = cosine_distance(x[:, :pair.a.count], x[:, pair.a.count:])
    d = d[np.isfinite(d)]
    return len(d), float(d.sum()), float((d * d).sum())


def open_pair(a: str, b: str, bands=None, force: bool = False) -> Pair:
    """Both rasters on ``a``'s grid cropped to their common extent; refuse different band
    counts, and (unless ``force``) different models, layers or normalisations."""
    ma, mb = open_input(a, bands), open_input(b, bands)
    if ma.count != mb.count:
        raise InputError(f"{a!r} has {ma.count} bands but {b!r} has {mb.count}: change compares "
                         "embeddings of the same model; give two rasters with the same bands (--bands).")
    sa, sb = source_sidecar(a), source_sidecar(b)
    differ = [k for k in COMPARED if sa.get(k) != sb.get(k)]
    mode_a, mode_b = (s.get("normalization", {}).get("mode") for s in (sa, sb))
    if mode_a != mode_b:
        differ.append("normalization")
    if differ and not force:
        shown = "; ".join(f"{k}: {sa.get(k)!r} vs {sb.get(k)!r}" if k != "normalization" else
                          f"normalization: {mode_a!r} vs {mode_b!r}" for k in differ)
        raise InputError(f"{a!r} and {b!r} were not encoded the same way ({shown}): their embeddings are "
                         "not comparable. Encode both with the same options, or pass --force.")
    if differ:
        warn(f"--force: comparing rasters encoded differently ({', '.join(differ)}).")
    if not ma.sources or not mb.sources:        # Zarr products, a stack's dates, TESSERA tiles
        if ma.grid != mb.grid:
            raise InputError(f"{a!r} and {b!r} are not on one grid: change reads Zarr products and TESSERA "
                             "tiles only on the same grid (two dates of one stack are).")
        return Pair(ma, mb)
    boxes = [_bounds_in(s, ma.grid.crs) for s in mb.sources]
    x0, y0, x1, y1 = ma.grid.bounds
    common = (max(x0, min(b[0] for b in boxes)), max(y0, min(b[1] for b in boxes)),
              min(x1, max(b[2] for b in boxes)), min(y1, max(b[3] for b in boxes)))
    grid = crop(ma.grid, common)
    return Pair(replace(ma, grid=grid), replace(mb, grid=grid))


# ----------------------------------------------------------------------------- hot spots

def components(d: np.ndarray, valid: np.ndarray, window, affine, threshold: float):
    """The 4-connected areas at or above ``threshold`` of the change ``d`` of a window: per
    label its pixel count, sum and max of the change and polygon, and the labels on the
    window's four edges (to join areas across windows); None without any."""
    from rasterio.features import shapes
    from rasterio.windows import Window, transform as window_transform
    from scipy import ndimage
    from shapely.geometry import shape

    r0, c0, h, w = window
    hot = valid & np.isfinite(d) & (d >= threshold)
    labels, n = ndimage.label(hot)
    if n == 0:
        return None
    idx = np.arange(1, n + 1)
    counts = ndimage.sum_labels(hot, labels, idx)
    sums = ndimage.sum_labels(np.where(hot, d, 0), labels, idx)
    maxima = ndimage.maximum(np.where(hot, d, -np.inf), labels, idx)
    transform = window_transform(Window(c0, r0, w, h), affine)
    polygons: dict[int, list] = {}
    for geom, value in shapes(labels.astype(np.int32), mask=hot, transform=transform, connectivity=4):
        polygons.setdefault(int(value), []).append(shape(geom))
    edges = {"top": labels[0], "bottom": labels[-1], "left": labels[:, 0], "right": labels[:, -1]}
    return {"counts": counts, "sums": sums, "max": maxima, "polygons": polygons, "edges": edges}


def join_components(windows: list, parts: list) -> list[list[tuple[int, int]]]:
    """Groups of ``(window index, label)`` that form one area: labels that touch across the
    edge between two adjacent windows are the same area (union-find)."""
    parent: dict = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    at = {(w[0], w[1]): i for i, w in enumerate(windows)}
    for i, (r, c, h, w) in enumerate(windows):
        if parts[i] is None:
            continue
        for label in range(1, len(parts[i]["counts"]) + 1):
            find((i, label))
        for j, mine, theirs in ((at.get((r + h, c)), "bottom", "top"), (at.get((r, c + w)), "right", "left")):
            if j is None or parts[j] is None:
                continue
            a, b = parts[i]["edges"][mine], parts[j]["edges"][theirs]
            for la, lb in set(zip(a[(a > 0) & (b > 0)].tolist(), b[(a > 0) & (b > 0)].tolist())):
                parent[find((i, la))] = find((j, lb))
    groups: dict = {}
    for key in list(parent):
        groups.setdefault(find(key), []).append(key)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


def hotspots(grid: Grid, windows: list, parts: list):
    """The hot-spot areas from the parts of each window (:func:`components`, None where it
    has none) as a GeoDataFrame (id, n_pixels, area, mean_change, max_change, geometry),
    largest first."""
    import geopandas as gpd
    from shapely import union_all

    rows = []
    pixel_area = abs(grid.affine.a * grid.affine.e)
    for group in join_components(windows, parts):
        n = sum(parts[i]["counts"][k - 1] for i, k in group)
        total = sum(parts[i]["sums"][k - 1] for i, k in group)
        peak = max(parts[i]["max"][k - 1] for i, k in group)
        geom = union_all([p for i, k in group for p in parts[i]["polygons"].get(k, [])])
        rows.append({"n_pixels": int(n), "area": float(n * pixel_area), "mean_change": float(total / n),
                     "max_change": float(peak), "geometry": geom})
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=grid.crs) if rows else gpd.GeoDataFrame(
        {"n_pixels": [], "area": [], "mean_change": [], "max_change": []}, geometry=[], crs=grid.crs)
    frame = frame.sort_values(["n_pixels", "mean_change"], ascending=False, ignore_index=True)
    frame.insert(0, "id", np.arange(1, len(frame) + 1))
    return frame


class Change(Stage):
    """Two dates -> the change of each pixel: ``change``; the hot spots as ``hotspots.parquet``
    (found in the apply pass, block by block, joined across block edges)."""

    name, product = "change", "change"

    def __init__(self, a: str, b: str, zscore: bool = False, threshold: float | None = None, force: bool = False):
        self.a, self.b, self.zscore, self.threshold, self.force = a, b, zscore, threshold, force

    def config(self) -> dict:
        return {"a": self.a, "b": self.b, "zscore": self.zscore, "threshold": self.threshold, "force": self.force}

    def fit(self, source, pixels) -> "Change":
        parts = source.map(_distance_moments, source.windows(READ_WINDOW), label="statistics")
        n = sum(p[0] for p in parts)
        if n == 0:
            raise InputError(f"{self.a!r} and {self.b!r} share no pixel valid in both: nothing to compare.")
        mean = sum(p[1] for p in parts) / n
        std = math.sqrt(max(sum(p[2] for p in parts) / n - mean * mean, 0.0))
        self.n_, self.cut_ = n, self.threshold if self.threshold is not None else mean + 3 * std
        self.affine_ = source.grid.affine
        self.model_ = ChangeRule(source.mosaic.a.count, mean, std, self.zscore)
        return self

    def products(self) -> list[Product]:
        return [Product("change", self.model_.n_outputs, "float32", np.nan,
                        ["cosine distance"] + (["z-score"] if self.zscore else []))]

    def block_part(self, window, values, valid):
        return components(values[0], valid, window, self.affine_, self.cut_)

    def extras(self, source, windows) -> dict:
        parts = getattr(self, "parts_", {})
        return {"hotspots.parquet": hotspots(source.grid, windows, [parts.get(i) for i in range(len(windows))])}

    def metrics(self, source, pixels, tally) -> dict:
        m = self.model_
        return {"pixels_compared": self.n_, "mean_distance": m.mean, "std_distance": m.std, "threshold": self.cut_,
                "threshold_rule": "given" if self.threshold is not None else "mean + 3 std"}

    def plan(self, output: str) -> str:
        return f"\nhot spots: areas with distance >= threshold -> {output}/hotspots.parquet"


def change(a: str, b: str, output: str, zscore: bool = False, threshold: float | None = None,
           force: bool = False, bands=None, block_size: int = 512, overwrite: bool = False,
           address: str | None = None, progress: bool = True, dry_run: bool = False,
           format: str = "gtiff") -> AnalysisResult:
    """ChangeRule between feature rasters ``a`` and ``b``: ``change.tif`` (cosine distance, and
    with ``zscore`` its z-score), ``hotspots.parquet``, quicklook, metrics."""
    stage = Change(a, b, zscore, threshold, force)
    return run(stage, BlockSource(open_pair(a, b, bands, force), a), output, None, block_size, overwrite, address,
               progress, dry_run, format)


def arguments(p) -> None:
    """``rayvit change``'s options (:mod:`rayvit.stages`)."""
    from ..options import add_format_option, add_ray_options, ints

    p.description = ("Per-pixel cosine distance (1 - cos) between the embeddings of two feature "
                     "rasters, block by block in Ray tasks; B is read onto A's grid (nearest "
                     "neighbour), cropped to their common extent. Writes change.tif (band 1: "
                     "distance; with --zscore band 2: its z-score over the scene), "
                     "hotspots.parquet (4-connected areas with distance >= --threshold, "
                     "default mean + 3 std: area, mean and max change), metrics.json, "
                     "quicklook.png. Rasters encoded with another model, layer or "
                     "normalisation (their sidecars) are refused unless --force.")
    p.epilog = ("example: rayvit change y2023/features.gti.gpkg y2025/features.gti.gpkg -o chg/ --zscore")
    p.add_argument("a", help="feature raster of the first date")
    p.add_argument("b", help="feature raster of the second date (same bands)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--zscore", action="store_true", help="add band 2: (distance - mean) / std over the scene")
    p.add_argument("--threshold", type=float, help="hot-spot distance threshold (default: mean + 3 std)")
    p.add_argument("--force", action="store_true", help="compare rasters whose sidecars name another model, "
                                                        "layer or normalisation")
    p.add_argument("--bands", type=ints, help="1-based bands to use in both (default: all)")
    p.add_argument("--block-size", type=int, default=512, help="pixels per processing block (default 512)")
    add_format_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace an output directory of another run")
    p.add_argument("--dry-run", action="store_true", help="check the inputs, print the work; writes nothing")
    add_ray_options(p)
