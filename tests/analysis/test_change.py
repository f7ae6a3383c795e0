"""Cosine distance, grid cropping and joining hot-spot areas across windows."""

import numpy as np
import pytest
from scipy import ndimage

from rayvit.analysis.change import cosine_distance, crop, join_components
from rayvit.errors import InputError
from rayvit.io.mosaic import Grid


def test_cosine_distance():
    a = np.array([[1.0, 0], [1, 1], [0, 2], [0, 0]])
    b = np.array([[2.0, 0], [-1, -1], [3, 0], [1, 0]])
    d = cosine_distance(a, b)
    np.testing.assert_allclose(d[:3], [0.0, 2.0, 1.0], atol=1e-12)
    assert np.isnan(d[3])


def test_crop_keeps_whole_pixels_of_the_first_grid():
    g = Grid("EPSG:32633", (10.0, 0, 1000.0, 0, -10.0, 2000.0), 100, 80)
    c = crop(g, (1035.0, 1500.0, 1500.0, 1995.0))
    assert c.transform[2] == 1030.0 and c.transform[5] == 2000.0
    assert (c.width, c.height) == (47, 50)
    with pytest.raises(InputError, match="do not overlap"):
        crop(g, (5000.0, 0.0, 6000.0, 10.0))


def test_areas_that_cross_window_edges_are_joined():
    rng = np.random.default_rng(3)
    hot = rng.random((37, 45)) > 0.55
    truth, n = ndimage.label(hot)
    windows = [(r, c, min(10, 37 - r), min(12, 45 - c)) for r in range(0, 37, 10) for c in range(0, 45, 12)]
    parts = []
    for r, c, h, w in windows:
        labels, k = ndimage.label(hot[r:r + h, c:c + w])
        parts.append(None if k == 0 else {
            "counts": ndimage.sum_labels(np.ones_like(labels), labels, np.arange(1, k + 1)),
            "edges": {"top": labels[0], "bottom": labels[-1], "left": labels[:, 0], "right": labels[:, -1]}})
    groups = join_components(windows, parts)
    assert len(groups) == n
    sizes = sorted(int(sum(parts[i]["counts"][k - 1] for i, k in g)) for g in groups)
    assert sizes == sorted(np.bincount(truth.ravel())[1:].tolist())
