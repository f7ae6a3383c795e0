"""The quickstart's generated landscape: every class, distinct spectra, vectors on their class."""

import geopandas as gpd
import numpy as np
import rasterio

from rayvit.landscape import CLASSES, SPECTRA, landscape, sample


def test_landscape_has_every_class_with_its_own_spectrum_and_is_seeded():
    pixels, truth = landscape(256, seed=3)
    again, _ = landscape(256, seed=3)
    assert np.array_equal(pixels, again) and pixels.dtype == np.uint16 and pixels.min() >= 1
    assert set(np.unique(truth)) == set(range(len(CLASSES)))
    means = np.array([pixels[:, truth == k].mean(axis=1) for k in range(len(CLASSES))])
    assert np.abs(means - SPECTRA).max() < 0.05 * SPECTRA.max()     # textures average out
    # the nearest class spectrum of each class mean is its own
    assert [int(np.argmin(((SPECTRA - m) ** 2).sum(axis=1))) for m in means] == list(range(len(CLASSES)))


def test_sample_writes_image_truth_and_vectors_that_lie_on_their_class(tmp_path):
    r = sample(str(tmp_path / "s"), size=400, seed=1)
    with rasterio.open(r.output) as ds:
        assert ds.count == 4 and ds.nodata is None and ds.dtypes[0] == "uint16"
        assert [c.name for c in ds.colorinterp] == ["blue", "green", "red", "undefined"]
    with rasterio.open(r.truth) as ds:
        truth, index = ds.read(1), ds.index
        assert len(ds.colormap(1)) >= len(CLASSES)
    refs, train = gpd.read_file(r.refs), gpd.read_file(r.train)
    assert set(refs.Type) == {"water", "forest"} and len(refs) <= 4   # up to two each, far apart
    for t, point in zip(refs.Type, refs.geometry):
        assert CLASSES[truth[index(point.x, point.y)]] == t
    assert set(train.Type) == set(CLASSES)
    for t, poly in zip(train.Type, train.geometry):
        x0, y0, x1, y1 = poly.bounds
        (r0, c0), (r1, c1) = index(x0 + 1, y1 - 1), index(x1 - 1, y0 + 1)
        assert {CLASSES[v] for v in np.unique(truth[r0:r1 + 1, c0:c1 + 1])} == {t}
