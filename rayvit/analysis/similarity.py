"""``similarity``: cosine similarity of every pixel with reference vectors from points/polygons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError
from .apply import AnalysisResult, Product, run
from .vectors import check_exists, samples_from, write_samples

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
class Similarity:
    """One output band per group of reference vectors."""

    references: list            # one (m_i, bands) array per band
    names: list
    reduce: str = "mean"

    @property
    def n_outputs(self) -> int:
        return len(self.references)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.stack([cosine(x, r, self.reduce) for r in self.references], axis=1)


def similarity(input: str, vectors: str, output: str, by: str | None = None, reduce: str = "mean",
               polygons: str = "all", samples: int = 1000, seed: int = 0, vector_crs: str | None = None,
               bands: Sequence[int] | None = None, block_size: int = 512, overwrite: bool = False,
               address: str | None = None, progress: bool = True, dry_run: bool = False) -> AnalysisResult:
    """Cosine similarity of every pixel of ``input`` with the pixels ``vectors`` select.

    One band (the mean reference vector, IAMAP), or with ``by`` one band per value of that
    column, named after it. ``reduce="max"``: the largest cosine with any single reference
    instead of the cosine with their mean. Writes ``similarity.tif`` (float32 in [-1, 1],
    nodata NaN), ``samples.gpkg`` (the reference pixels and their values) and ``metrics.json``.
    """
    if reduce not in REDUCTIONS:
        raise InputError(f"--reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}.")
    check_exists(vectors)
    used = {}

    def fit(mosaic, pixels):
        gdf, s = samples_from(vectors, mosaic, vector_crs, polygons, samples, seed)
        if by is not None and by not in gdf.columns:
            raise InputError(f"--by {by!r} is not a column of {vectors!r}; columns: "
                             f"{', '.join(c for c in gdf.columns if c != 'geometry')}.")
        groups = np.full(len(s.feature), "all", dtype=object) if by is None else gdf[by].to_numpy()[s.feature]
        names = sorted({str(g) for g in groups})
        keys = np.array([str(g) for g in groups])
        used.update(samples=s, columns={"group": keys})
        return Similarity([s.values[keys == n] for n in names], names, reduce)

    def metrics(model, mosaic, pixels, tally):
        s = used["samples"]
        return {"reduce": model.reduce, "by": by, "bands": model.names,
                "references_per_band": [len(r) for r in model.references], **s.report}

    def extra(model, mosaic, outdir):
        if "samples" in used:
            write_samples(f"{outdir}/samples.gpkg", mosaic, used["samples"], used["columns"])

    def products(m):
        return [Product("similarity", m.n_outputs, "float32", np.nan,
                        list(m.names) if by else ["similarity"])]

    config = {"vectors": vectors, "by": by, "reduce": reduce, "polygons": polygons, "samples": samples,
              "seed": seed, "vector_crs": vector_crs}
    return run("similarity", input, output, config, fit, None, products, metrics, bands, block_size,
               overwrite, address, progress, statistics_pass=False, extra_files=extra, dry_run=dry_run)
