"""``similarity``: cosine similarity of every pixel with reference vectors from points/polygons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from .source import BlockSource
from .stage import AnalysisResult, Product, Stage, run
from .vectors import check_exists, samples_frame, samples_from

REDUCTIONS = ("mean", "max")


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows become NaN (their cosine is undefined)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, x / norm, np.nan)


def cosine(x: np.ndarray, references: np.ndarray, reduce: str = "mean") -> np.ndarray:
    """Cosine of each row of ``x`` with the mean of ``references`` (``mean``, IAMAP), or the
    largest cosine with any single reference (``max``)."""
    if reduce == "mean":
        return unit(x) @ unit(references.mean(axis=0))
    return np.max(unit(x) @ unit(references).T, axis=1)


@dataclass
class References:
    """One output band per group of reference vectors."""

    references: list            # one (m_i, bands) array per band
    names: list
    reduce: str = "mean"

    @property
    def n_outputs(self) -> int:
        return len(self.references)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.stack([cosine(x, r, self.reduce) for r in self.references], axis=1)


class Similarity(Stage):
    """Every pixel -> its cosine similarity with reference pixels: ``similarity``; the
    reference pixels as ``samples.gpkg``."""

    name, product = "similarity", "similarity"

    def __init__(self, vectors: str, by: str | None = None, reduce: str = "mean", polygons: str = "all",
                 samples: int = 1000, seed: int = 0, vector_crs: str | None = None):
        if reduce not in REDUCTIONS:
            raise InputError(f"--reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}.")
        check_exists(vectors)
        self.vectors, self.by, self.reduce, self.polygons = vectors, by, reduce, polygons
        self.samples, self.seed, self.vector_crs = samples, seed, vector_crs

    def config(self) -> dict:
        return {"vectors": self.vectors, "by": self.by, "reduce": self.reduce, "polygons": self.polygons,
                "samples": self.samples, "seed": self.seed, "vector_crs": self.vector_crs}

    def fit(self, source, pixels) -> "Similarity":
        gdf, s = samples_from(self.vectors, source, self.vector_crs, self.polygons, self.samples, self.seed)
        by = self.by
        if by is not None and by not in gdf.columns:
            raise InputError(f"--by {by!r} is not a column of {self.vectors!r}; columns: "
                             f"{', '.join(c for c in gdf.columns if c != 'geometry')}.")
        groups = np.full(len(s.feature), "all", dtype=object) if by is None else gdf[by].to_numpy()[s.feature]
        names = sorted({str(g) for g in groups})
        keys = np.array([str(g) for g in groups])
        self.samples_, self.keys_ = s, keys
        self.model_ = References([s.values[keys == n] for n in names], names, self.reduce)
        return self

    def products(self) -> list[Product]:
        m = self.model_
        return [Product("similarity", m.n_outputs, "float32", np.nan, list(m.names) if self.by else ["similarity"])]

    def extras(self, source, windows) -> dict:
        return {"samples.gpkg": samples_frame(source.grid, source.bands, self.samples_, {"group": self.keys_})}

    def metrics(self, source, pixels, tally) -> dict:
        m = self.model_
        return {"reduce": m.reduce, "by": self.by, "bands": m.names,
                "references_per_band": [len(r) for r in m.references], **self.samples_.report}


def similarity(input: str, vectors: str, output: str, by: str | None = None, reduce: str = "mean",
               polygons: str = "all", samples: int = 1000, seed: int = 0, vector_crs: str | None = None,
               bands: Sequence[int] | None = None, block_size: int = 512, overwrite: bool = False,
               address: str | None = None, progress: bool = True, dry_run: bool = False,
               format: str = "gtiff") -> AnalysisResult:
    """Cosine similarity of every pixel of ``input`` with the pixels ``vectors`` select.

    One band (the mean reference vector, IAMAP), or with ``by`` one band per value of that
    column, named after it. ``reduce="max"``: the largest cosine with any single reference
    instead of the cosine with their mean. Writes ``similarity.tif`` (float32 in [-1, 1],
    nodata NaN), ``samples.gpkg`` (the reference pixels and their values) and ``metrics.json``.
    """
    stage = Similarity(vectors, by, reduce, polygons, samples, seed, vector_crs)
    return run(stage, BlockSource.open(input, bands), output, None, block_size, overwrite, address, progress,
               dry_run, format)


def arguments(p) -> None:
    """``rayvit similarity``'s options (:mod:`rayvit.stages`)."""
    from ..options import analysis_common

    p.description = ("Cosine similarity of every pixel with the mean vector of the pixels "
                     "the reference geometries select (IAMAP), or with --by COLUMN one band "
                     "per class, named after it. Computed block by block in Ray tasks. Writes "
                     "similarity.tif (float32 in [-1, 1], nodata NaN), samples.gpkg (the "
                     "reference pixels with their values), metrics.json, quicklook.png.")
    p.epilog = ("example: rayvit similarity out/features.gti.gpkg refs.gpkg -o sim/ --by Type")
    analysis_common(p, vectors="required", standardize=False)
    p.add_argument("--by", help="one band per value of this column (default: one band, all references)")
    p.add_argument("--reduce", choices=("mean", "max"), default="mean",
                   help="mean: cosine with the mean reference vector (default, IAMAP); max: the largest "
                        "cosine with any single reference")
    p.add_argument("--seed", type=int, default=0, help="seed of --polygons sample")
