"""Few-shot scoring rules and the exact top-k with an exclusion radius."""

import itertools

import numpy as np
import pytest

from rayvit.analysis.search import best, candidate_count, fit_scorer, suppress
from rayvit.errors import InputError


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_cosine_score_is_mean_cosine_to_positives_minus_negatives():
    rng = np.random.default_rng(0)
    pos, neg, x = rng.normal(size=(4, 6)), rng.normal(size=(3, 6)), rng.normal(size=(10, 6))
    score = fit_scorer(pos, neg, "cosine").apply(x)[:, 0]
    expected = (_unit(x) @ _unit(pos).T).mean(axis=1) - (_unit(x) @ _unit(neg).T).mean(axis=1)
    np.testing.assert_allclose(score, expected, rtol=1e-12)
    only_pos = fit_scorer(pos, None, "cosine").apply(x)[:, 0]
    np.testing.assert_allclose(only_pos, (_unit(x) @ _unit(pos).T).mean(axis=1), rtol=1e-12)


def test_linear_scorer_ranks_positives_above_negatives_and_needs_negatives():
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(20, 5)) + [3, 0, 0, 0, 0]
    neg = rng.normal(size=(20, 5)) - [3, 0, 0, 0, 0]
    s = fit_scorer(pos, neg, "linear")
    assert s.apply(pos).min() > s.apply(neg).max()
    with pytest.raises(InputError, match="needs negative examples"):
        fit_scorer(pos, None, "linear")


def _greedy(scores, rows, cols, k, radius):
    """The reference: greedy selection over *all* pixels in score order."""
    order = np.lexsort((cols, rows, -scores))
    taken = []
    for i in order:
        if all((rows[i] - rows[j]) ** 2 + (cols[i] - cols[j]) ** 2 > radius ** 2 for j in taken):
            taken.append(i)
            if len(taken) == k:
                break
    return [(rows[i], cols[i]) for i in taken]


@pytest.mark.parametrize("k,radius", [(5, 0), (7, 1), (6, 3)])
def test_top_k_from_per_window_candidates_equals_greedy_over_all_pixels(k, radius):
    """Each window keeps its N = k (2r+1)^2 best; merging them gives the global greedy top-k."""
    rng = np.random.default_rng(k + radius)
    h, w = 40, 50
    # clustered high scores, so that suppression matters and crosses window edges
    yy, xx = np.mgrid[:h, :w]
    scores = (np.exp(-((yy - 19.5) ** 2 + (xx - 24.5) ** 2) / 30) + 0.05 * rng.random((h, w))).ravel()
    rows, cols = yy.ravel(), xx.ravel()
    n = candidate_count(k, radius)
    kept = (np.zeros(0), np.zeros(0, int), np.zeros(0, int))
    for r0, c0 in itertools.product(range(0, h, 16), range(0, w, 16)):
        inside = (rows >= r0) & (rows < r0 + 16) & (cols >= c0) & (cols < c0 + 16)
        found = best(scores[inside], rows[inside], cols[inside], n)
        kept = best(*(np.concatenate([a, b]) for a, b in zip(kept, found)), n)
    take = suppress(*kept, k, radius)
    assert [(kept[1][i], kept[2][i]) for i in take] == _greedy(scores, rows, cols, k, radius)
    if radius:
        chosen = np.array([(kept[1][i], kept[2][i]) for i in take])
        d = ((chosen[:, None] - chosen[None]) ** 2).sum(-1)
        assert (d[~np.eye(len(chosen), dtype=bool)] > radius ** 2).all()
