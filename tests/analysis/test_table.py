"""Pooling feature pixels into table cells."""

import numpy as np

from rayvit.analysis.table import pool_cells, window_side


def test_pool_cells_is_the_mean_of_valid_pixels_per_cell():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(3, 10, 7))
    valid = rng.random((10, 7)) > 0.3
    valid[4:8, 4:7] = False             # cell (1, 1) of the 4-px grid has no valid pixel
    rows, cols, means, counts, inside = pool_cells(data, valid, 4)
    expected = {}
    for r in range(0, 10, 4):
        for c in range(0, 7, 4):
            v = valid[r:r + 4, c:c + 4]
            if v.any():
                expected[(r // 4, c // 4)] = (data[:, r:r + 4, c:c + 4][:, v].mean(axis=1), v.sum(), v.size)
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(expected)
    assert (1, 1) not in expected
    for r, c, m, n, size in zip(rows, cols, means, counts, inside):
        np.testing.assert_allclose(m, expected[(r, c)][0], rtol=1e-12)
        assert n == expected[(r, c)][1] and size == expected[(r, c)][2]   # edge cells are smaller


def test_windows_are_whole_cells_and_bounded():
    assert window_side(768, 16) % 16 == 0
    assert window_side(768, 16) ** 2 * 768 * 4 <= 256 * 2**20
    assert window_side(10**7, 5) == 5      # never less than one cell
