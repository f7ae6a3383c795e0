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
``(2r+1)**2`` others, so the k hits lie among the ``N = k (2r+1)**2`` best pixels. Each task
keeps its window's ``N`` best, the driver merges them keeping ``N``: memory is bounded by
``N``, whatever the area.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..console import warn
from ..errors import InputError
from ..io import geoparquet, storage
from . import sampling
from .apply import AnalysisResult, Product, open_input, run, run_windows
from .similarity import unit
from .vectors import check_exists, samples_from, write_samples

SCORERS = ("cosine", "linear")
SCORE_WINDOW = 1024


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


def window_candidates(mosaic, window, index, n):
    """Ray task: the ``n`` best valid pixels of a window of the score raster."""
    data, valid = mosaic.read(*window)
    rr, cc = np.nonzero(valid & np.isfinite(data[0]))
    return best(data[0, rr, cc].astype(np.float64), rr + window[0], cc + window[1], n)


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


def top_k(score_path: str, k: int, radius: int) -> tuple[np.ndarray, ...]:
    """The exact top-k of a score raster over all its windows (see the module docstring)."""
    mosaic = open_input(score_path)
    g = mosaic.grid
    n = candidate_count(k, radius)
    kept = (np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))

    def merge(i, found):
        nonlocal kept
        kept = best(*(np.concatenate([a, b]) for a, b in zip(kept, found)), n)

    run_windows(window_candidates, mosaic, sampling.grid_windows(g.height, g.width, SCORE_WINDOW), n,
                on_result=merge, label="top-k")
    take = suppress(*kept, k, radius)
    return tuple(a[take] for a in kept) + (mosaic,)


def write_hits(path: str, scores, rows, cols, mosaic, metadata: dict) -> None:
    """The hits as GeoParquet: rank (1 = best), score, row, col, pixel footprint."""
    import pyarrow.parquet as pq

    bounds = geoparquet.cell_bounds(mosaic.grid.affine, rows, cols, 1, 1)
    table = geoparquet.polygons_table(bounds, {"rank": np.arange(1, len(scores) + 1), "score": scores,
                                               "row": rows, "col": cols}, mosaic.grid.crs, metadata)
    tmp = path + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


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


def _examples(path: str, mosaic, label: str | None, vector_crs, polygons, samples, seed):
    """``(vectors, is_positive, Samples or None)`` of one example file: the rows of an
    embedding table as they are (they may come from another date or area), else the raster
    pixels its geometries select. With ``label``, that column says which are positive."""
    found = table_embeddings(path, mosaic.count)
    if found is not None:
        frame, vectors, s = *found, None
        rows = np.arange(len(frame))
    else:
        frame, s = samples_from(path, mosaic, vector_crs, polygons, samples, seed)
        vectors, rows = s.values, s.feature
    if label is None:
        return vectors, np.ones(len(vectors), bool), s
    if label not in frame.columns:
        raise InputError(f"--label {label!r} is not a column of {path!r}; columns: "
                         f"{', '.join(c for c in frame.columns if c != 'geometry')}.")
    return vectors, _truthy(frame[label].to_numpy()[rows]), s


def search(input: str, positives: str, output: str, negatives: str | None = None, label: str | None = None,
           scorer: str = "cosine", top_k_hits: int = 100, exclude_radius: int = 0, polygons: str = "all",
           samples: int = 1000, seed: int = 0, vector_crs: str | None = None,
           bands: Sequence[int] | None = None, block_size: int = 512, overwrite: bool = False,
           address: str | None = None, progress: bool = True, dry_run: bool = False) -> AnalysisResult:
    """Score every pixel of ``input`` against example pixels; write ``score.tif`` and the
    top-k hits ``hits.parquet``."""
    if scorer not in SCORERS:
        raise InputError(f"--scorer must be one of {', '.join(SCORERS)}, got {scorer!r}.")
    if top_k_hits < 1:
        raise InputError(f"--top-k must be >= 1, got {top_k_hits}.")
    if exclude_radius < 0:
        raise InputError(f"--exclude-radius must be >= 0 pixels, got {exclude_radius}.")
    for path in (positives, negatives):
        if path:
            check_exists(path)
    used = {}

    def fit(mosaic, pixels):
        values, is_pos, s = _examples(positives, mosaic, label, vector_crs, polygons, samples, seed)
        neg_values = values[~is_pos]
        if negatives:
            neg, _, _ = _examples(negatives, mosaic, None, vector_crs, polygons, samples, seed)
            neg_values = np.concatenate([neg_values, neg])
        if not is_pos.any():
            raise InputError(f"only negative examples: every example of {positives!r} has --label {label!r} "
                             "0/false; give at least one positive example.")
        if s is not None and s.report.get("outside_raster"):
            warn(f"{s.report['outside_raster']} of the {s.report['geometries']} example geometries of "
                 f"{positives!r} lie outside the raster and are left out.")
        used.update(samples=s, columns={"positive": is_pos.astype(np.int8)}, report=s.report if s else {})
        return fit_scorer(values[is_pos], neg_values if len(neg_values) else None, scorer, seed)

    def metrics(model, mosaic, pixels, tally):
        return {"scorer": model.kind, "positives": model.n_positives, "negatives": model.n_negatives,
                "top_k": top_k_hits, "exclude_radius": exclude_radius, **used["report"]}

    def extra(model, mosaic, outdir):
        if used["samples"] is not None:
            write_samples(f"{outdir}/samples.gpkg", mosaic, used["samples"], used["columns"])

    def products(m):
        return [Product("score", 1, "float32", np.nan, [f"{m.kind} score"])]

    config = {"positives": positives, "negatives": negatives, "label": label, "scorer": scorer,
              "polygons": polygons, "samples": samples, "seed": seed, "vector_crs": vector_crs}
    result = run("search", input, output, config, fit, None, products, metrics, bands, block_size,
                 overwrite, address, progress, statistics_pass=False, extra_files=extra, dry_run=dry_run)
    if dry_run:
        result.extra["plan"] += (f"\nhits:   the top {top_k_hits} pixels (exclusion radius {exclude_radius} px) "
                                 f"-> {output}/hits.parquet")
        return result
    scores, rows, cols, mosaic = top_k(result.output, top_k_hits, exclude_radius)
    if len(scores) < top_k_hits:
        warn(f"--top-k {top_k_hits} is more than the {len(scores)} pixels that can be hits (valid pixels"
             f"{', spaced by --exclude-radius' if exclude_radius else ''}): all {len(scores)} are returned.")
    local = storage.is_local(output)
    target = os.path.join(storage.local_path(output), "hits.parquet") if local else None
    if not local:
        import tempfile
        target = os.path.join(tempfile.mkdtemp(prefix="rayvit-hits-"), "hits.parquet")
    write_hits(target, scores, rows, cols, mosaic,
               {"rayvit": {"stage": "search", "source": input, "scorer": scorer, "top_k": top_k_hits,
                           "exclude_radius_px": exclude_radius}})
    if not local:
        storage.filesystem(output).put_file(target, storage.join(output, "hits.parquet"))
    result.extra.update(hits=storage.join(output, "hits.parquet"), n_hits=int(len(scores)))
    return result
