"""reduce / cluster on real rasters through Ray tasks, checked against scikit-learn."""

import json

import numpy as np
import pytest
import rasterio
from conftest import read, run_cli, write_raster
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

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
    r = cluster(path, tmp_path / "o", n_clusters=5, params={"init": init}, block_size=32, **Q)
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
    pca = reduce(path, tmp_path / "pca", n_components=2, **Q)
    with pytest.raises(InputError, match="written by rayvit reduce, not cluster"):
        cluster(path, tmp_path / "bad3", model=pca.model_path, **Q)
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.joblib.*could not be read"):
        cluster(path, tmp_path / "bad2", model=str(junk), **Q)
    assert not any((tmp_path / d).exists() for d in ("bad", "bad2", "bad3"))


def test_bad_inputs(correlated, tmp_path):
    path, _, _ = correlated
    with pytest.raises(InputError, match="--n-components 7 must be between 1 and the band count"):
        reduce(path, tmp_path / "a", n_components=7, **Q)
    with pytest.raises(InputError, match="unknown --method 'PCAA' for reduce; valid: .*FastICA.*UMAP"):
        reduce(path, tmp_path / "b", method="PCAA", **Q)
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


def test_hdbscan_recovers_separated_clusters_by_nearest_sampled_label(blobs, tmp_path):
    path, _, truth, valid = blobs
    r = cluster(path, tmp_path / "o", method="HDBSCAN", params={"min_cluster_size": 50},
                sample_size=1500, **Q)
    labels = read(r.output)[0][0]
    assert adjusted_rand_score(truth[valid], labels[valid]) == 1.0
    assert (labels[~valid] == 255).all() and r.metrics["n_clusters"] == 4
    assert "nearest sampled pixel" in r.metrics["fit"] and r.metrics["noise_value"] == 254
    assert sum(r.metrics["cluster_sizes"]) == valid.sum()


def test_noise_gets_its_own_value(blobs, tmp_path):
    path, _, truth, valid = blobs
    # DBSCAN with a radius smaller than the noise: every sampled pixel is noise
    r = cluster(path, tmp_path / "o", method="DBSCAN", params={"eps": 1e-6, "min_samples": 5},
                sample_size=300, **Q)
    labels = read(r.output)[0][0]
    assert (labels[valid] == 254).all() and (labels[~valid] == 255).all()
    assert r.metrics["noise_pixels"] == valid.sum()


def test_any_estimator_with_predict_or_transform(blobs, correlated, tmp_path):
    path, _, truth, valid = blobs
    r = cluster(path, tmp_path / "mb", method="MiniBatchKMeans", n_clusters=4, sample_size=2000, **Q)
    assert adjusted_rand_score(truth[valid], read(r.output)[0][0][valid]) == 1.0
    assert r.metrics["fit"].endswith("applied by predict")
    cpath, data, cvalid = correlated
    x = StandardScaler().fit_transform(data[:, cvalid].T.astype(np.float64))
    s = reduce(cpath, tmp_path / "svd", method="TruncatedSVD", n_components=2, sample_size=10**6, **Q)
    from sklearn.decomposition import TruncatedSVD
    want = TruncatedSVD(2, random_state=None).fit(x)
    np.testing.assert_allclose(s.metrics["explained_variance_ratio"], want.explained_variance_ratio_, rtol=1e-4)
    assert read(s.output)[0].shape == (2, 70, 90)


def test_umap_on_a_small_sample_end_to_end(blobs, umap_compiled, tmp_path):
    assert umap_compiled.wait(timeout=600).returncode == 0
    path, _, truth, valid = blobs
    r = reduce(path, tmp_path / "u", method="UMAP", n_components=2, sample_size=400,
               params={"n_neighbors": 15, "random_state": 0, "n_epochs": 50}, **Q)
    out = read(r.output)[0]
    assert out.shape == (2, 60, 80) and np.isfinite(out[:, valid]).all() and np.isnan(out[:, ~valid]).all()
    # the embedding keeps the 4 blobs apart: KMeans on it recovers them
    emb = out[:, valid].T
    assert adjusted_rand_score(truth[valid], KMeans(4, n_init=4, random_state=0).fit_predict(emb)) == 1.0
    assert r.metrics["method"] == "UMAP" and "transform" in r.metrics["fit"]


def test_params_are_validated_against_the_estimator(blobs, tmp_path):
    path = blobs[0]
    with pytest.raises(InputError, match="'min_size' not a parameter of HDBSCAN; valid keys: min_cluster_size"):
        cluster(path, tmp_path / "a", method="HDBSCAN", params={"min_size": 5}, **Q)
    with pytest.raises(InputError, match="min_cluster_size='big' has the wrong type for HDBSCAN"):
        cluster(path, tmp_path / "b", method="HDBSCAN", params='{"min_cluster_size": "big"}', **Q)
    with pytest.raises(InputError, match="'min_cluster_size' parameter of HDBSCAN must be an int in the range"):
        cluster(path, tmp_path / "b", method="HDBSCAN", params='{"min_cluster_size": 1}', **Q)
    with pytest.raises(InputError, match="--params is not valid JSON"):
        cluster(path, tmp_path / "c", params="{n_clusters: 3}", **Q)
    with pytest.raises(InputError, match="n_neighbors='many' has the wrong type for UMAP"):
        reduce(path, tmp_path / "d", method="UMAP", params={"n_neighbors": "many"}, **Q)
    with pytest.raises(InputError, match="--n-clusters does not apply to HDBSCAN"):
        cluster(path, tmp_path / "e", method="HDBSCAN", n_clusters=3, **Q)
    with pytest.raises(InputError, match="'n_init' not a parameter of DistributedKMeans; valid keys: n_clusters"):
        cluster(path, tmp_path / "f", params={"n_init": 3}, **Q)
    assert not any((tmp_path / d).exists() for d in "abcdef")
    r = run_cli("cluster", path, "-o", tmp_path / "g", "--method", "HDBSCAN", "--params", '{"min_clustr_size": 2}')
    assert r.returncode == 2 and "valid keys: min_cluster_size" in r.stderr and not (tmp_path / "g").exists()
