"""``search``: few-shot search of a feature raster from positive (and negative) examples.

Score of a pixel ``x`` (``scorer``):

- ``cosine`` (default): mean cosine to the positives minus mean cosine to the negatives,
  ``unit(x) . (mean unit(p) - mean unit(n))`` (without negatives, the mean cosine to the
  positives);
- ``linear``: the decision function (log-odds) of a logistic regression fitted on the unit
  vectors of the examples, positives 1, negatives 0 (needs negatives).

Outputs: ``score.tif`` (float32, written block by block in Ray tasks as every analysis stage),
and ``hits.parquet``: the top-k pixels as GeoParquet (footprint, score, rank), no two closer
than ``exclude_radius`` pixels. The top-k is exact over the whole mosaic: greedy selection
in score order accepts at most ``k`` pixels and each accepted pixel rules out fewer than
``(2r+1)**2`` others, so the k hits lie among the ``N = k (2r+1)**2`` best pixels. Each apply
task keeps the ``N`` best of the block it wrote, the driver merges them keeping ``N``: one
pass over the data, memory bounded by ``N`` whatever the area.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..console import warn
from ..errors import InputError
from ..io import geoparquet, storage
from .similarity import unit
from .source import BlockSource
from .stage import AnalysisResult, Product, Stage, run
from .vectors import check_exists, samples_frame, samples_from

SCORERS = ("cosine", "linear")


@dataclass
class Scorer:
    """A fitted search: ``apply(x)`` gives the score of each row of ``x``."""

    kind: str
    direction: np.ndarray          # cosine: the weights applied to unit(x)
    intercept: float = 0.0
    n_positives: int = 0
    n_negatives: int = 0

    @property
    def n_outputs(self) -> int:
        return 1

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (unit(x) @ self.direction + self.intercept)[:, None]


def fit_scorer(positives: np.ndarray, negatives: np.ndarray | None, kind: str = "cosine",
               seed: int = 0) -> Scorer:
    """Fit the score rule on example vectors ``(n, D)``."""
    n_neg = 0 if negatives is None else len(negatives)
    if kind == "cosine":
        direction = np.nanmean(unit(positives), axis=0)
        if n_neg:
            direction = direction - np.nanmean(unit(negatives), axis=0)
        return Scorer(kind, direction, 0.0, len(positives), n_neg)
    from sklearn.linear_model import LogisticRegression

    if not n_neg:
        raise InputError("--scorer linear needs negative examples (--negatives, or rows labelled 0 with "
                         "--label); or use --scorer cosine, which works from positives alone.")
    x = np.concatenate([unit(positives), unit(negatives)])
    y = np.r_[np.ones(len(positives)), np.zeros(n_neg)]
    model = LogisticRegression(class_weight="balanced", random_state=seed, max_iter=1000).fit(x, y)
    return Scorer(kind, model.coef_[0], float(model.intercept_[0]), len(positives), n_neg)


# ----------------------------------------------------------------------------- top-k

def candidate_count(k: int, radius: int) -> int:
    """How many of the best pixels certainly hold the greedy top-k with ``radius``."""
    return k * (2 * radius + 1) ** 2


def best(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """The ``n`` best ``(scores, rows, cols)``, best first; ties by row, then column."""
    order = np.lexsort((cols, rows, -scores))[:n]
    return scores[order], rows[order], cols[order]


def suppress(scores, rows, cols, k: int, radius: int) -> np.ndarray:
    """Indices (in order) of the greedy top-k: each next best pixel farther than ``radius``
    pixels (Euclidean) from every one taken."""
    if radius <= 0:
        return np.arange(min(k, len(scores)))
    taken: list[int] = []
    for i in range(len(scores)):
        if taken:
            dr, dc = rows[taken] - rows[i], cols[taken] - cols[i]
            if (dr * dr + dc * dc <= radius * radius).any():
                continue
        taken.append(i)
        if len(taken) == k:
            break
    return np.array(taken, dtype=np.int64)


def hits_table(scores, rows, cols, grid, metadata: dict):
    """The hits as a GeoParquet table: rank (1 = best), score, row, col, pixel footprint."""
    bounds = geoparquet.cell_bounds(grid.affine, rows, cols, 1, 1)
    return geoparquet.polygons_table(bounds, {"rank": np.arange(1, len(scores) + 1), "score": scores,
                                              "row": rows, "col": cols}, grid.crs, metadata)


# ----------------------------------------------------------------------------- examples

def table_embeddings(path: str, bands: int):
    """``(frame, vectors (n, D))`` of a GeoParquet table with an ``embedding`` column (a
    ``rayvit table`` output: int8 codes are dequantised with its ``emb:quantization``), or
    None for any other vector file."""
    import json

    import pyarrow.parquet as pq

    if not path.lower().endswith((".parquet", ".geoparquet")) or not storage.is_local(path):
        return None
    table = pq.read_table(path)
    if "embedding" not in table.column_names:
        return None
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float64)
    emb = json.loads((table.schema.metadata or {}).get(b"emb", b"{}"))
    quant = emb.get("emb:quantization")
    if quant:
        vectors = vectors * np.array(quant["scale"]) + np.array(quant["offset"])
    if vectors.shape[1] != bands:
        raise InputError(f"example table {path!r} holds {vectors.shape[1]}-dimensional embeddings, but the "
                         f"raster has {bands} bands; use a table of the same features.")
    return table.drop_columns([c for c in ("embedding", "geometry", "bbox") if c in table.column_names]
                              ).to_pandas(), vectors


def _truthy(values) -> np.ndarray:
    return np.array([str(v).lower() not in ("0", "false", "no", "none", "nan", "") for v in values])


def _examples(path: str, source, label: str | None, vector_crs, polygons, samples, seed):
    """``(vectors, is_positive, Samples or None)`` of one example file: the rows of an
    embedding table as they are (they may come from another date or area), else the raster
    pixels its geometries select. With ``label``, that column says which are positive."""
    found = table_embeddings(path, source.count)
    if found is not None:
        frame, vectors, s = *found, None
        rows = np.arange(len(frame))
    else:
        frame, s = samples_from(path, source, vector_crs, polygons, samples, seed)
        vectors, rows = s.values, s.feature
    if label is None:
        return vectors, np.ones(len(vectors), bool), s
    if label not in frame.columns:
        raise InputError(f"--label {label!r} is not a column of {path!r}; columns: "
                         f"{', '.join(c for c in frame.columns if c != 'geometry')}.")
    return vectors, _truthy(frame[label].to_numpy()[rows]), s


class Search(Stage):
    """Every pixel -> its score against the examples: ``score``; the top-k as ``hits.parquet``
    (from the apply pass: each block keeps its ``N`` best pixels), the example pixels as
    ``samples.gpkg``."""

    name, product = "search", "score"

    def __init__(self, positives: str, negatives: str | None = None, label: str | None = None,
                 scorer: str = "cosine", top_k: int = 100, exclude_radius: int = 0, polygons: str = "all",
                 samples: int = 1000, seed: int = 0, vector_crs: str | None = None):
        if scorer not in SCORERS:
            raise InputError(f"--scorer must be one of {', '.join(SCORERS)}, got {scorer!r}.")
        if top_k < 1:
            raise InputError(f"--top-k must be >= 1, got {top_k}.")
        if exclude_radius < 0:
            raise InputError(f"--exclude-radius must be >= 0 pixels, got {exclude_radius}.")
        for path in (positives, negatives):
            if path:
                check_exists(path)
        self.positives, self.negatives, self.label, self.scorer = positives, negatives, label, scorer
        self.top_k, self.exclude_radius, self.polygons = top_k, exclude_radius, polygons
        self.samples, self.seed, self.vector_crs = samples, seed, vector_crs

    def config(self) -> dict:
        return {"positives": self.positives, "negatives": self.negatives, "label": self.label, "scorer": self.scorer,
                "polygons": self.polygons, "samples": self.samples, "seed": self.seed, "vector_crs": self.vector_crs}

    def fit(self, source, pixels) -> "Search":
        args = (self.vector_crs, self.polygons, self.samples, self.seed)
        values, is_pos, s = _examples(self.positives, source, self.label, *args)
        neg_values = values[~is_pos]
        if self.negatives:
            neg, _, _ = _examples(self.negatives, source, None, *args)
            neg_values = np.concatenate([neg_values, neg])
        if not is_pos.any():
            raise InputError(f"only negative examples: every example of {self.positives!r} has --label "
                             f"{self.label!r} 0/false; give at least one positive example.")
        if s is not None and s.report.get("outside_raster"):
            warn(f"{s.report['outside_raster']} of the {s.report['geometries']} example geometries of "
                 f"{self.positives!r} lie outside the raster and are left out.")
        self.samples_, self.positive_ = s, is_pos.astype(np.int8)
        self.model_ = fit_scorer(values[is_pos], neg_values if len(neg_values) else None, self.scorer, self.seed)
        return self

    def products(self) -> list[Product]:
        return [Product("score", 1, "float32", np.nan, [f"{self.model_.kind} score"])]

    def block_part(self, window, values, valid):
        """The block's ``N`` best valid scores (module docstring): ``(scores, rows, cols)``."""
        rr, cc = np.nonzero(valid & np.isfinite(values[0]))
        return best(values[0, rr, cc].astype(np.float64), rr + window[0], cc + window[1],
                    candidate_count(self.top_k, self.exclude_radius))

    def take(self, index, found) -> None:
        """Merge a block's candidates: the ``N`` best so far are kept, whatever the area."""
        kept = getattr(self, "kept_", (np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)))
        self.kept_ = best(*(np.concatenate([a, b]) for a, b in zip(kept, found)),
                          candidate_count(self.top_k, self.exclude_radius))

    def extras(self, source, windows) -> dict:
        kept = self.kept_
        take = suppress(*kept, self.top_k, self.exclude_radius)
        scores, rows, cols = (a[take] for a in kept)
        if len(scores) < self.top_k:
            warn(f"--top-k {self.top_k} is more than the {len(scores)} pixels that can be hits (valid pixels"
                 f"{', spaced by --exclude-radius' if self.exclude_radius else ''}): all {len(scores)} are returned.")
        out = {"hits.parquet": hits_table(scores, rows, cols, source.grid, {"rayvit": {
            "stage": "search", "source": source.path, "scorer": self.scorer, "top_k": self.top_k,
            "exclude_radius_px": self.exclude_radius}})}
        if self.samples_ is not None:
            out["samples.gpkg"] = samples_frame(source.grid, source.bands, self.samples_, {"positive": self.positive_})
        return out

    def metrics(self, source, pixels, tally) -> dict:
        m = self.model_
        return {"scorer": m.kind, "positives": m.n_positives, "negatives": m.n_negatives, "top_k": self.top_k,
                "exclude_radius": self.exclude_radius, **(self.samples_.report if self.samples_ else {})}

    def plan(self, output: str) -> str:
        return (f"\nhits:   the top {self.top_k} pixels (exclusion radius {self.exclude_radius} px) "
                f"-> {output}/hits.parquet")


def search(input: str, positives: str, output: str, negatives: str | None = None, label: str | None = None,
           scorer: str = "cosine", top_k_hits: int = 100, exclude_radius: int = 0, polygons: str = "all",
           samples: int = 1000, seed: int = 0, vector_crs: str | None = None,
           bands: Sequence[int] | None = None, block_size: int = 512, overwrite: bool = False,
           address: str | None = None, progress: bool = True, dry_run: bool = False,
           format: str = "gtiff") -> AnalysisResult:
    """Score every pixel of ``input`` against example pixels; write ``score.tif`` and the
    top-k hits ``hits.parquet``."""
    stage = Search(positives, negatives, label, scorer, top_k_hits, exclude_radius, polygons, samples, seed,
                   vector_crs)
    return run(stage, BlockSource.open(input, bands), output, None, block_size, overwrite, address, progress,
               dry_run, format)


def arguments(p) -> None:
    """``rayvit search``'s options (:mod:`rayvit.stages`)."""
    from ..options import analysis_common

    p.description = ("Few-shot search: score every pixel against positive (and negative) "
                     "examples, block by block in Ray tasks. Examples are points/polygons "
                     "(the pixels they select) or rows of a `rayvit table` GeoParquet (their "
                     "embeddings, from any date or area). --scorer cosine (default): mean "
                     "cosine to the positives minus mean cosine to the negatives; linear: "
                     "logistic regression on the examples (needs negatives), its log-odds. "
                     "Writes score.tif, hits.parquet (the exact top-k pixels over the whole "
                     "mosaic: rank, score, row, col, footprint), samples.gpkg, metrics.json, "
                     "quicklook.png.")
    p.epilog = ("example: rayvit search out/features.gti.gpkg pos.gpkg -o hits/ --negatives neg.gpkg "
                "--top-k 200 --exclude-radius 3")
    analysis_common(p, vectors="required", standardize=False, vectors_dest="positives")
    p.add_argument("--negatives", help="negative examples (points/polygons or table rows)")
    p.add_argument("--label", help="a column of the examples file: 1/true marks positives, 0/false negatives")
    p.add_argument("--scorer", choices=("cosine", "linear"), default="cosine",
                   help="cosine: mean cosine to positives - mean cosine to negatives (default); linear: "
                        "logistic regression on the examples")
    p.add_argument("--top-k", dest="top_k_hits", type=int, default=100, help="hits to list (default 100)")
    p.add_argument("--exclude-radius", type=int, default=0,
                   help="no two hits closer than this many pixels (default 0: any pixel may be a hit)")
    p.add_argument("--seed", type=int, default=0, help="seed of --polygons sample and the linear scorer")
