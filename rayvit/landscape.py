"""Generated sample data (seeded): for the quickstart, the tests and the benchmarks, not for
science.

- :func:`sample` (the quickstart's first job step, ``rayvit sample``): a synthetic landscape
  of water, forest, fields and built-up patches with distinct spectra *and* textures, plus
  the truth that generated it (``truth.tif``), reference points (``refs.gpkg``) and labelled
  training polygons (``train.gpkg``), so that the maps made from it can be checked.
- :func:`make_sample_raster`: a fast, smooth raster of any size for the benchmarks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from .io import storage

# Sentinel-2-like reflectance x 10000 of bands blue, green, red, near infrared
CLASSES = ("water", "forest", "fields", "built-up")
SPECTRA = np.array([[700, 600, 400, 200],        # water: dark, darkest in the NIR
                    [300, 550, 300, 3200],       # forest: NIR plateau
                    [600, 900, 800, 2400],       # fields: moderate, striped
                    [1400, 1450, 1600, 1900]],   # built-up: bright, blocky
                   dtype=np.float32)
PER_CLASS = 3                                    # training polygons per class
ORIGIN = (500000.0, 4100000.0)                   # upper left, EPSG:32633
CRS = "EPSG:32633"


def _texture(kind: int, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A multiplicative texture per class (1 = none), on a pixel grid."""
    h, w = yy.shape[0], xx.shape[1]
    if kind == 0:    # water: almost flat
        return 1 + 0.02 * rng.standard_normal((h, w))
    if kind == 1:    # forest: crowns, ~4-px blobs
        blobs = rng.standard_normal(((h + 3) // 4, (w + 3) // 4))
        return 1 + 0.25 * np.kron(blobs, np.ones((4, 4)))[:h, :w]
    if kind == 2:    # fields: stripes of 6 px (ploughing), direction by parcel
        return 1 + 0.3 * np.sign(np.sin((yy + xx) * np.pi / 6))
    blocks = ((yy // 8 + xx // 8) % 2) * 0.6 - 0.3       # built-up: 8-px roofs and streets
    return 1 + blocks + 0.05 * rng.standard_normal((h, w))


def landscape(size: int, seed: int = 0, cells: int = 36) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (4, size, size) uint16, truth (size, size) uint8 class codes)``.

    The truth is a Voronoi partition of ``cells`` seeded points; each cell takes a class
    (every class at least once) whose spectrum and texture fill it, plus sensor noise.
    """
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, size, size=(cells, 2))
    kinds = np.concatenate([np.arange(len(CLASSES)), rng.integers(0, len(CLASSES), cells - len(CLASSES))])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    nearest = np.full((size, size), np.inf, np.float32)
    cell = np.zeros((size, size), np.int32)
    for i, (py, px) in enumerate(points):
        d = (yy - py) ** 2 + (xx - px) ** 2
        closer = d < nearest
        nearest[closer], cell[closer] = d[closer], i
    truth = kinds[cell].astype(np.uint8)
    pixels = np.zeros((4, size, size), np.float32)
    for k in range(len(CLASSES)):
        where = truth == k
        texture = _texture(k, yy, xx, rng)
        for b in range(4):
            pixels[b][where] = (SPECTRA[k, b] * texture)[where]
    pixels += rng.normal(0, 30, size=pixels.shape)
    return np.clip(pixels, 1, 10000).astype(np.uint16), truth


@dataclass
class SampleResult:
    output: str            # the image
    outdir: str
    truth: str
    refs: str
    train: str
    elapsed_s: float

    def summary(self) -> str:
        return (f"generated a synthetic sample (not real imagery): {self.output}, its truth {self.truth}, "
                f"reference points {self.refs} and training polygons {self.train}")


def _write(path: str, data: np.ndarray, **profile) -> None:
    def write(tmp: str) -> None:
        with rasterio.open(tmp, "w", driver="GTiff", width=data.shape[-1], height=data.shape[-2],
                           count=data.shape[0], dtype=data.dtype, crs=CRS, tiled=True, blockxsize=256,
                           blockysize=256, compress="deflate", **profile) as dst:
            dst.write(data)
            if data.shape[0] == 4:
                dst.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
                dst.descriptions = ("blue", "green", "red", "nir")

    storage.atomic_write(path, write)


def sample(output: str, size: int = 1120, seed: int = 0, res: float = 10.0, address: str | None = None,
           progress: bool = True) -> SampleResult:
    """Write the synthetic landscape (``sample.tif``: 4 bands, uint16, no nodata) with its
    ``truth.tif`` (class codes, colour table), ``refs.gpkg`` (points at the centres of two
    water and two forest patches, column ``Type``) and ``train.gpkg`` (up to three squares
    per class inside patches of that class, at least a fifth of the image apart, so that
    spatial cross-validation holds them out one by one; column ``Type``). Seeded: the same every time."""
    import geopandas as gpd
    from shapely.geometry import Point, box

    from .report.quicklook import palette

    t0 = time.monotonic()
    os.makedirs(output, exist_ok=True)
    pixels, truth = landscape(size, seed)
    transform = from_origin(*ORIGIN, res, res)
    paths = {n: os.path.join(output, n) for n in ("sample.tif", "truth.tif", "refs.gpkg", "train.gpkg")}
    _write(paths["sample.tif"], pixels, transform=transform, photometric="MINISBLACK")
    _write(paths["truth.tif"], truth[None], transform=transform)
    with rasterio.open(paths["truth.tif"], "r+") as dst:
        dst.write_colormap(1, palette(len(CLASSES)))
    # up to PER_CLASS squares of 48 x 48 px inside one class each, far apart (spatial CV)
    rng = np.random.default_rng(seed + 1)
    half, apart = 24, size // 5
    found: dict[int, list] = {k: [] for k in range(len(CLASSES))}
    for r, c in rng.integers(half, size - half, size=(20000, 2)):
        k = int(truth[r, c])
        far = all(max(abs(r - r2), abs(c - c2)) > apart for kk in found for r2, c2 in found[kk])
        if len(found[k]) < PER_CLASS and far and (truth[r - half:r + half + 1, c - half:c + half + 1] == k).all():
            found[k].append((r, c))

    def xy(r, c):
        return ORIGIN[0] + (c + 0.5) * res, ORIGIN[1] - (r + 0.5) * res

    refs = [(CLASSES[k], Point(*xy(r, c))) for k in (0, 1) for r, c in found[k][:2]]
    train = [(CLASSES[k], box(*(np.array(xy(r + half, c - half)) - res / 2),
                              *(np.array(xy(r - half, c + half)) + res / 2)))
             for k in found for r, c in found[k]]
    for name, rows in (("refs.gpkg", refs), ("train.gpkg", train)):
        frame = gpd.GeoDataFrame({"Type": [t for t, _ in rows]}, geometry=[g for _, g in rows], crs=CRS)
        storage.atomic_write(paths[name], lambda tmp: frame.to_file(tmp, driver="GPKG", layer=name[:-5]))
    return SampleResult(paths["sample.tif"], output, paths["truth.tif"], paths["refs.gpkg"],
                        paths["train.gpkg"], time.monotonic() - t0)


def make_sample_raster(path: str, height: int, width: int, bands: int = 4, seed: int = 0,
                       crs: str = "EPSG:32633", res: float = 10.0, dtype: str = "uint8") -> str:
    """Write a tiled, compressed GeoTIFF (uint8, or uint16 scaled like reflectance x 10000)
    of a smooth synthetic field, written in strips (for the benchmarks).

    Smooth fields (a sum of a few random sinusoids) plus a per-band offset and noise, so
    features differ between places. Generated strip by strip: memory stays small. Every
    band is data (``photometric=MINISBLACK``: a 4-band uint8 GeoTIFF is RGBA otherwise,
    and its nodata would then shadow an alpha band).
    """
    rng = np.random.default_rng(seed)
    waves = rng.uniform(0.002, 0.02, size=(bands, 3, 2))
    phases = rng.uniform(0, 2 * np.pi, size=(bands, 3))
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype=dtype, crs=crs,
                   transform=from_origin(500000.0, 4100000.0, res, res), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", nodata=0, photometric="MINISBLACK")
    gain = 40 if dtype == "uint16" else 1
    strip = 512
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, height, strip):
            rows = min(strip, height - r0)
            yy = np.arange(r0, r0 + rows, dtype=np.float32)[:, None]
            xx = np.arange(width, dtype=np.float32)[None, :]
            out = np.empty((bands, rows, width), dtype)
            for b in range(bands):
                # sin(ay + bx + p) = sin(ay) cos(bx + p) + cos(ay) sin(bx + p): outer products
                field = sum(np.sin(waves[b, k, 0] * yy) * np.cos(waves[b, k, 1] * xx + phases[b, k])
                            + np.cos(waves[b, k, 0] * yy) * np.sin(waves[b, k, 1] * xx + phases[b, k])
                            for k in range(3))
                noise = rng.normal(0, 8, size=(rows, width)).astype(np.float32)
                out[b] = np.clip((128 + 35 * field + noise) * gain, 1, 255 * gain).astype(dtype)
            dst.write(out, window=rasterio.windows.Window(0, r0, width, rows))
    return path


def arguments(p) -> None:
    """``rayvit sample``'s options (:mod:`rayvit.stages`)."""
    p.description = ("Writes a GENERATED, seeded sample (not real imagery): sample.tif (4-band "
                                   "uint16 landscape of water, forest, fields and built-up patches with "
                                   "distinct spectra and textures), truth.tif (the class of every pixel), "
                                   "refs.gpkg (reference points) and train.gpkg (labelled polygons). The "
                                   "quickstart job (jobs/quickstart.yaml) starts with this step.")
    p.add_argument("-o", "--output", default="quickstart-out/sample", help="output directory "
                                                                          "(default: quickstart-out/sample)")
    p.add_argument("--size", type=int, default=1120, help="side in pixels (default: 1120, 10 m pixels)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")


def main(args) -> int:
    """``rayvit sample`` from its parsed options."""
    print(sample(args.output, args.size, args.seed).summary())
    return 0
