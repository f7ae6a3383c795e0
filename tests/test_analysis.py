"""reduce / cluster on real rasters through Ray tasks, checked against scikit-learn."""

import json

import numpy as np
import pytest
import rasterio
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from conftest import read, run_cli, write_raster
from rayvit import cluster, reduce
from rayvit.errors import InputError

pytestmark = pytest.mark.usefixtures("ray_local")
NODATA = -9999.0
Q = dict(progress=False)


@pytest.fixture(scope="module")
def correlated(tmp_path_factory):
    """6 correlated float bands, 70 x 90 px, with a nodata hole."""
    rng = np.random.default_rng(0)
    mix = np.linalg.qr(rng.normal(size=(6, 6)))[0] * [5, 3, 2, 1, 0.5, 0.1]
    data = (mix @ rng.normal(size=(6, 70 * 90)) + 10).reshape(6, 70, 90).astype("float32")
    data[:, 5:9, 5:20] = NODATA
    valid = ~(data == NODATA).any(axis=0)
    path = write_raster(tmp_path_factory.mktemp("c") / "corr.tif", data, nodata=NODATA)
    return path, data, valid


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """4 well-separated clusters of pixels in 3 bands, in spatial quadrants, plus nodata."""
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20]], float)
    truth = np.zeros((60, 80), int)
    truth[:30, 40:], truth[30:, :40], truth[30:, 40:] = 1, 2, 3
    data = (centres[truth].transpose(2, 0, 1) + rng.normal(scale=0.5, size=(3, 60, 80))).astype("float32")
    data[:, :3, :3] = NODATA
    path = write_raster(tmp_path_factory.mktemp("b") / "blobs.tif", data, nodata=NODATA)
    return path, data, truth, ~(data == NODATA).any(axis=0)


def test_pca_equals_scikit_learn(correlated, tmp_path):
    path, data, valid = correlated
    r = reduce(path, tmp_path / "o", n_components=3, block_size=32, **Q)
    x = StandardScaler().fit_transform(data[:, valid].T.astype(np.float64))
    sk = PCA(3).fit(x)
    np.testing.assert_allclose(r.metrics["explained_variance"], sk.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(r.metrics["explained_variance_ratio"], sk.explained_variance_ratio_, rtol=1e-6)
    out = read(r.output)[0]
    got = out[:, valid].T
    want = sk.transform(x)
    signs = np.sign((got * want).sum(axis=0))
    np.testing.assert_allclose(got * signs, want, atol=2e-4)   # components up to sign
    assert np.isnan(out[:, ~valid]).all()                     # nodata stays nodata
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["cumulative_explained_variance_ratio"][-1] == pytest.approx(sum(sk.explained_variance_ratio_))
    assert (tmp_path / "o" / "quicklook.png").stat().st_size > 0


def test_pca_without_standardisation(correlated, tmp_path):
    path, data, valid = correlated
    r = reduce(path, tmp_path / "o", n_components=2, standardize=False, **Q)
    sk = PCA(2).fit(data[:, valid].T.astype(np.float64))
    np.testing.assert_allclose(r.metrics["explained_variance"], sk.explained_variance_, rtol=1e-6)


def test_kmeans_equals_scikit_learn_with_the_same_initial_centroids(correlated, tmp_path):
    path, data, valid = correlated
    x = StandardScaler().fit_transform(data[:, valid].T.astype(np.float64))
    init = x[np.random.default_rng(3).choice(len(x), 5, replace=False)]
    sk = KMeans(5, init=init, n_init=1, algorithm="lloyd", max_iter=300, tol=1e-4).fit(x)
    r = cluster(path, tmp_path / "o", n_clusters=5, init=init, block_size=32, **Q)
    labels = read(r.output)[0][0]
    np.testing.assert_array_equal(labels[valid], sk.labels_)
    assert r.metrics["inertia"] == pytest.approx(sk.inertia_, rel=1e-6)


def test_kmeans_recovers_separated_clusters_and_writes_a_colour_table(blobs, tmp_path):
    path, _, truth, valid = blobs
    r = cluster(path, tmp_path / "o", n_clusters=4, **Q)
    labels, profile, _, _ = read(r.output)
    assert adjusted_rand_score(truth[valid], labels[0][valid]) == 1.0
    assert profile["dtype"] == "uint8" and profile["nodata"] == 255 and (labels[0][~valid] == 255).all()
    with rasterio.open(r.output) as ds:
        cmap = ds.colormap(1)
    assert len({cmap[k][:3] for k in range(4)}) == 4
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert sorted(m["cluster_sizes"]) == sorted(np.bincount(truth[valid]).tolist())
    assert m["silhouette_sample"] > 0.9


def test_results_do_not_depend_on_block_size(correlated, tmp_path):
    path, _, _ = correlated
    a = read(reduce(path, tmp_path / "a", block_size=16, **Q).output)[0]
    b = read(reduce(path, tmp_path / "b", block_size=512, **Q).output)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    ca = read(cluster(path, tmp_path / "ca", n_clusters=3, block_size=16, **Q).output)[0]
    cb = read(cluster(path, tmp_path / "cb", n_clusters=3, block_size=512, **Q).output)[0]
    np.testing.assert_array_equal(ca, cb)


def test_model_reuse_and_band_mismatch(blobs, correlated, tmp_path):
    path, data, _, _ = blobs
    first = cluster(path, tmp_path / "fit", n_clusters=4, **Q)
    again = cluster(path, tmp_path / "apply", model=first.model_path, **Q)
    np.testing.assert_array_equal(read(first.output)[0], read(again.output)[0])
    with pytest.raises(InputError, match="fitted on 3 bands, but the input has 6"):
        cluster(correlated[0], tmp_path / "bad", model=first.model_path, **Q)
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.joblib.*could not be read"):
        cluster(path, tmp_path / "bad2", model=str(junk), **Q)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()


def test_bad_inputs(correlated, tmp_path):
    path, _, _ = correlated
    with pytest.raises(InputError, match="--n-components 7 must be between 1 and the band count"):
        reduce(path, tmp_path / "a", n_components=7, **Q)
    with pytest.raises(InputError, match="unknown --method 'TSNE'"):
        reduce(path, tmp_path / "b", method="TSNE", **Q)
    empty = write_raster(tmp_path / "empty.tif", np.full((2, 8, 8), NODATA, "float32"), nodata=NODATA)
    with pytest.raises(InputError, match="no valid pixel"):
        cluster(empty, tmp_path / "c", **Q)
    assert not any((tmp_path / d).exists() for d in "abc")


def test_cli_reduce_and_cluster(correlated, tmp_path):
    path, _, _ = correlated
    r = run_cli("reduce", path, "-o", tmp_path / "r", "--n-components", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    c = run_cli("cluster", tmp_path / "r" / "reduced.tif", "-o", tmp_path / "c", "--n-clusters", "3", "--quiet")
    assert c.returncode == 0, c.stderr
    assert read(tmp_path / "c" / "clusters.tif")[0].shape == (1, 70, 90)
    bad = run_cli("reduce", path, "-o", tmp_path / "x", "--n-components", "9")
    assert bad.returncode == 2 and "--n-components 9" in bad.stderr and not (tmp_path / "x").exists()


def test_real_iamap_raster_pca_and_kmeans(iamap, tmp_path):
    src = str(iamap / "test.tif")
    r = reduce(src, tmp_path / "pca", n_components=3, **Q)
    assert len(r.metrics["explained_variance_ratio"]) == 3 and r.metrics["n_pixels"] > 300_000
    c = cluster(src, tmp_path / "km", n_clusters=5, **Q)
    labels = read(c.output)[0][0]
    with rasterio.open(src) as ds:
        nodata = ds.read_masks(1) == 0
    assert (labels[nodata] == 255).all() and set(np.unique(labels[~nodata])) == set(range(5))
