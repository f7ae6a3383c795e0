"""Merge strategies on hand-made contributions: exact values, and order independence."""

import itertools
import math

import numpy as np
import pytest

from rayvit.encode.merge import MERGERS, Contribution, get_merger, merge
from rayvit.errors import InputError


def contributions():
    """Three overlapping 1-band tiles on a 1x4 block; tile 2 has an invalid pixel."""
    a = Contribution(0, 0, 0, np.array([[[1.0, 2.0, 3.0]]], np.float32), np.array([[True, True, True]]))
    b = Contribution(1, 0, 1, np.array([[[10.0, 20.0, 30.0]]], np.float32), np.array([[True, True, True]]))
    c = Contribution(2, 0, 2, np.array([[[-5.0, 99.0]]], np.float32), np.array([[True, False]]))
    return [a, b, c]


EXPECTED = {
    "first": [1, 2, 3, 30],
    "center": [1, 2, 3, 30],
    "last": [1, 10, -5, 30],
    "mean": [1, 6, (3 + 20 - 5) / 3, 30],
    "min": [1, 2, -5, 30],
    "max": [1, 10, 20, 30],
    # weights from the window over each tile's own width (a, b: 3 px; c: 2 px), by hand:
    # Hann sin^2(pi (i + .5) / n): n=3 -> 1/4, 1, 1/4; n=2 -> 1/2, 1/2
    "hann": [1, (2 + 10 / 4) / (1 + 1 / 4), (3 / 4 + 20 - 5 / 2) / (1 / 4 + 1 + 1 / 2), 30],
    # Gaussian, sigma n/4: n=3 -> g, 1, g with g = exp(-8/9); n=2 -> e, e with e = exp(-1/2)
    "gaussian": [1, (2 + 10 * math.exp(-8 / 9)) / (1 + math.exp(-8 / 9)),
                 (3 * math.exp(-8 / 9) + 20 - 5 * math.exp(-0.5)) / (math.exp(-8 / 9) + 1 + math.exp(-0.5)), 30],
}


@pytest.mark.parametrize("method", sorted(MERGERS))
def test_merge_values_and_order_independence(method):
    results = []
    for perm in itertools.permutations(contributions()):
        out, valid = merge((1, 1, 5), list(perm), method)
        results.append(out)
        assert valid.tolist() == [[True, True, True, True, False]]
        np.testing.assert_allclose(out[0, 0, :4], np.float32(EXPECTED[method]), rtol=0, atol=1e-6)
        assert np.isnan(out[0, 0, 4])
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])  # bit-identical whatever the arrival order


def test_mean_is_the_true_mean_not_a_running_pairwise_mean():
    out, _ = merge((1, 1, 1), [Contribution(i, 0, 0, np.full((1, 1, 1), v, np.float32), np.ones((1, 1), bool))
                               for i, v in enumerate([0.0, 0.0, 3.0])], "mean")
    assert out[0, 0, 0] == 1.0  # IAMAP's ((0+0)/2+3)/2 would give 1.5


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(InputError, match="valid: center, first, last, mean, min, max"):
        get_merger("median")


@pytest.mark.parametrize("method", sorted(MERGERS))
def test_torch_and_numpy_merges_are_bit_identical(method):
    """The device stage merges torch tensors with the same code: same IEEE operations, same bits."""
    import torch
    rng = np.random.default_rng(0)
    items = [Contribution(r, int(rng.integers(0, 4)), int(rng.integers(0, 4)),
                          rng.normal(size=(3, 4, 5)).astype(np.float32), rng.random((4, 5)) > 0.3)
             for r in range(6)]
    want, want_valid = merge((3, 8, 9), items, method)
    tensors = [Contribution(c.rank, c.row, c.col, torch.from_numpy(c.features), torch.from_numpy(c.valid))
               for c in items]
    got, got_valid = merge((3, 8, 9), tensors, method)
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(got_valid.numpy(), want_valid)


def test_a_callable_is_still_a_merge_method():
    def newest(shape, contributions):
        out = np.full(shape, -1.0, np.float32)
        for c in contributions:
            sy, sx = c.slices()
            out[:, sy, sx] = c.rank
        return out, out[0] >= 0
    out, valid = merge((1, 1, 5), contributions(), newest)
    assert out[0, 0].tolist() == [0, 1, 2, 2, -1] and valid[0].tolist() == [True] * 4 + [False]


def test_contributions_out_of_rank_order_are_refused():
    merger = get_merger("first")((1, 1, 5), np.zeros(1, np.float32))
    a, b, _ = contributions()
    merger.add(b)
    with pytest.raises(ValueError, match="increasing rank order"):
        merger.add(a)
