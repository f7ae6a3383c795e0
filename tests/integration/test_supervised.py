"""similarity and classify: generated rasters with known answers, and IAMAP's real data."""

import json

import geopandas as gpd
import joblib
import numpy as np
import pytest
import rasterio
from conftest import UTM, read, run_cli, write_raster
from shapely.geometry import Point, box
from sklearn.ensemble import RandomForestClassifier

from rayvit.analysis.classify import classify
from rayvit.analysis.similarity import similarity
from rayvit.errors import InputError

pytestmark = pytest.mark.usefixtures("ray_local")
Q = dict(progress=False)
NODATA = -9999.0
X0, Y0, RES = 500000.0, 4000000.0, 10.0
RF = {"n_estimators": 20}


def centre(row, col):
    return Point(X0 + (col + 0.5) * RES, Y0 - (row + 0.5) * RES)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """5 float bands, 40 x 60 px; three land-cover 'classes' in vertical stripes; nodata corner."""
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 60), int)
    truth[:, 20:40], truth[:, 40:] = 1, 2
    means = np.array([[1, 5, 2, 0, 3], [4, 1, 1, 3, 0], [0, 2, 6, 1, 1]], float)
    data = (means[truth].transpose(2, 0, 1) + rng.normal(scale=0.3, size=(5, 40, 60))).astype("float32")
    data[:, :2, :2] = NODATA
    path = write_raster(tmp_path_factory.mktemp("s") / "scene.tif", data, nodata=NODATA)
    return path, data, truth


def points(path, cells, crs=UTM, **columns):
    gdf = gpd.GeoDataFrame(columns, geometry=[centre(r, c) for r, c in cells], crs=crs)
    gdf.to_file(path)
    return str(path)


@pytest.fixture(scope="module")
def training(scene, tmp_path_factory):
    """30 labelled points per class (text labels), a numeric target and a group column."""
    _, data, truth = scene
    rng = np.random.default_rng(1)
    cells = [(int(r), int(c)) for r, c in zip(rng.integers(3, 40, 90), rng.integers(3, 60, 90))]
    names = np.array(["forest", "river", "urban"])
    labels = [names[truth[r, c]] for r, c in cells]
    biomass = [float(data[0, r, c] * 10 + data[1, r, c]) for r, c in cells]
    path = points(tmp_path_factory.mktemp("v") / "train.gpkg", cells, Type=labels, biomass=biomass,
                  plot=[i // 3 for i in range(90)])
    return path, cells, labels


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_similarity_per_class_and_max(scene, tmp_path):
    path, data, _ = scene
    cells = [(5, 5), (10, 12), (30, 25), (35, 30), (20, 50)]
    refs = points(tmp_path / "refs.gpkg", cells, Type=["a", "a", "b", "b", "c"])
    r = similarity(path, refs, tmp_path / "o", by="Type", **Q)
    out, profile, _, desc = read(r.output)
    assert desc == ("a", "b", "c") and profile["dtype"] == "float32"
    px = data.reshape(5, -1).T.astype(np.float64)
    for band, members in enumerate([[0, 1], [2, 3], [4]]):
        mean = np.mean([data[:, r_, c_] for r_, c_ in (cells[i] for i in members)], axis=0)
        want = (unit(px) @ unit(mean)).reshape(40, 60)
        np.testing.assert_allclose(out[band][2:], want[2:], rtol=0, atol=1e-6)
    assert np.isnan(out[:, :2, :2]).all() and np.nanmax(out) <= 1 and np.nanmin(out) >= -1
    mx = read(similarity(path, refs, tmp_path / "m", by="Type", reduce="max", **Q).output)[0]
    ab = unit(px) @ unit(np.stack([data[:, r_, c_] for r_, c_ in cells[:2]])).T.astype(np.float64)
    np.testing.assert_allclose(mx[0][2:], ab.max(axis=1).reshape(40, 60)[2:], atol=1e-6)
    s = gpd.read_file(tmp_path / "o" / "samples.gpkg")
    assert sorted(s["group"]) == ["a", "a", "b", "b", "c"] and {"b1", "b5"} <= set(s.columns)


def test_classification_cv_refit_on_all_and_outputs(scene, training, tmp_path):
    path, data, truth = scene
    vec, cells, labels = training
    r = classify(path, vec, tmp_path / "o", label="Type", params=RF, proba=True, **Q)
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["classes"] == ["forest", "river", "urban"] and len(m["cv"]["folds"]) == 5
    assert m["cv"]["pooled"]["accuracy"] > 0.9 and m["cv"]["pooled"]["n"] == 90
    assert np.array(m["cv"]["pooled"]["confusion_matrix"]["rows_true_columns_predicted"]).sum() == 90
    pred, profile, _, _ = read(r.output)
    assert profile["dtype"] == "uint8" and profile["nodata"] == 255 and (pred[0][:2, :2] == 255).all()
    assert (pred[0][2:] == truth[2:]).mean() > 0.95
    # the saved model is refit on all labelled pixels: the same as fitting scikit-learn on them
    s = gpd.read_file(tmp_path / "o" / "samples.gpkg")
    x = s[[f"b{i}" for i in range(1, 6)]].to_numpy()
    sk = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, s["code"].to_numpy())
    valid = ~(data == NODATA).any(axis=0)
    np.testing.assert_array_equal(pred[0][valid], sk.predict(data[:, valid].T.astype(np.float64)))
    assert sorted(s["fold"].unique()) == [1, 2, 3, 4, 5] and len(s) == 90
    bundle = joblib.load(tmp_path / "o" / "model.joblib")
    assert bundle["model"].classes == ["forest", "river", "urban"]
    proba, _, _, names = read(tmp_path / "o" / "probability.tif")
    assert names == ("forest", "river", "urban")
    np.testing.assert_allclose(proba[:, valid].sum(axis=0), 1, atol=1e-6)
    with rasterio.open(r.output) as ds:
        assert len({ds.colormap(1)[k][:3] for k in range(3)}) == 3
    assert "<Category>river</Category>" in open(r.output + ".aux.xml").read()


def test_spatial_cv_keeps_blocks_disjoint_across_folds(scene, training, tmp_path):
    path, _, _ = scene
    vec = training[0]
    classify(path, vec, tmp_path / "o", label="Type", cv="spatial", cv_block=100.0, folds_n=4,
             params=RF, **Q)
    s = gpd.read_file(tmp_path / "o" / "samples.gpkg")
    blocks = list(zip((s.geometry.x // 100).astype(int), (s.geometry.y // 100).astype(int)))
    fold_of = {}
    for block, fold in zip(blocks, s["fold"]):
        assert fold_of.setdefault(block, fold) == fold, f"block {block} in folds {fold_of[block]} and {fold}"
    assert len(set(fold_of.values())) == 4
    g = classify(path, vec, tmp_path / "g", label="Type", cv="group", group_column="plot", params=RF, **Q)
    sg = gpd.read_file(tmp_path / "g" / "samples.gpkg")
    assert (sg.groupby("cv_group")["fold"].nunique() == 1).all() and g.metrics["cv"]["mode"] == "group"


def test_regression_cv_and_model_reuse(scene, training, tmp_path):
    path, data, _ = scene
    vec = training[0]
    r = classify(path, vec, tmp_path / "o", label="biomass", method="RandomForestRegressor", params=RF, **Q)
    cv = r.metrics["cv"]
    assert r.metrics["task"] == "regression" and set(cv["pooled"]) >= {"mae", "rmse", "r2"}
    assert cv["pooled"]["r2"] > 0.5 and len(cv["folds"]) == 5
    out, profile, _, _ = read(r.output)
    assert profile["dtype"] == "float32" and np.isnan(out[0][:2, :2]).all()
    again = classify(path, None, tmp_path / "again", model=r.model_path, **Q)
    np.testing.assert_array_equal(read(again.output)[0], out)
    other = write_raster(tmp_path / "three.tif", data[:3], nodata=NODATA)
    with pytest.raises(InputError, match="fitted on 5 bands, but the input has 3"):
        classify(other, None, tmp_path / "bad", model=r.model_path, **Q)


def test_more_than_255_classes_and_block_size_independence(scene, tmp_path):
    path, _, _ = scene
    cells = [(r, c) for r in range(3, 40, 2) for c in range(3, 60, 2)][:300]
    vec = points(tmp_path / "many.gpkg", cells, cls=[f"c{i:03d}" for i in range(300)])
    a = classify(path, vec, tmp_path / "a", label="cls", method="KNeighborsClassifier",
                 params={"n_neighbors": 1}, cv="none", block_size=16, **Q)
    b = classify(path, vec, tmp_path / "b", label="cls", method="KNeighborsClassifier",
                 params={"n_neighbors": 1}, cv="none", block_size=512, **Q)
    pa, profile, _, _ = read(a.output)
    assert profile["dtype"] == "uint16" and profile["nodata"] == 65535
    np.testing.assert_array_equal(pa, read(b.output)[0])
    for i, (r, c) in enumerate(cells):       # each labelled pixel maps to its own class
        assert pa[0][r, c] == i
    with rasterio.open(a.output) as ds:
        assert len(ds.colormap(1)) >= 300


def test_bad_inputs(scene, training, tmp_path):
    path, _, _ = scene
    vec = training[0]
    with pytest.raises(InputError, match="--label 'Typ' is not a column of .*columns: Type, biomass, plot"):
        classify(path, vec, tmp_path / "a", label="Typ", **Q)
    far = points(tmp_path / "far.gpkg", [(-500, -500)], Type=["x"])
    with pytest.raises(InputError, match="none of its 1 geometries selects a valid pixel.*1 lie outside"):
        classify(path, far, tmp_path / "b", label="Type", **Q)
    one = points(tmp_path / "one.gpkg", [(5, 5), (6, 6)], Type=["x", "x"])
    with pytest.raises(InputError, match="only one class"):
        classify(path, one, tmp_path / "c", label="Type", **Q)
    few = points(tmp_path / "few.gpkg", [(5, 5), (6, 6), (30, 50)], Type=["x", "x", "y"])
    with pytest.raises(InputError, match="3 labelled pixels are fewer than --folds 5"):
        classify(path, few, tmp_path / "d", label="Type", **Q)
    with pytest.raises(InputError, match="unknown --method 'RandomForest' for classify"):
        classify(path, vec, tmp_path / "e", label="Type", method="RandomForest", **Q)
    with pytest.raises(InputError, match="'depth' not a parameter of RandomForestClassifier; valid keys"):
        classify(path, vec, tmp_path / "f", label="Type", params={"depth": 3}, **Q)
    with pytest.raises(InputError, match="--label 'Type' .* is not numeric .* RandomForestRegressor is a regressor"):
        classify(path, vec, tmp_path / "g", label="Type", method="RandomForestRegressor", **Q)
    gdf = gpd.GeoDataFrame({"Type": ["a", "b"]}, geometry=[centre(5, 5), centre(30, 50)])
    gdf.to_file(tmp_path / "nocrs.shp")
    with pytest.raises(InputError, match="nocrs.shp' has no CRS; give it with --vector-crs"):
        classify(path, str(tmp_path / "nocrs.shp"), tmp_path / "h", label="Type", **Q)
    assert not any((tmp_path / d).exists() for d in "abcdefgh")
    cli = run_cli("classify", path, vec, "-o", tmp_path / "i", "--label", "nope")
    assert cli.returncode == 2 and "columns: Type, biomass, plot" in cli.stderr and not (tmp_path / "i").exists()


def test_polygons_all_and_sample(scene, tmp_path):
    path, _, truth = scene
    polys = gpd.GeoDataFrame({"Type": ["forest", "urban"]}, crs=UTM, geometry=[
        box(X0 + 30, Y0 - 200, X0 + 130, Y0 - 100),            # 10 x 10 pixel centres
        box(X0 + 500, Y0 - 300, X0 + 503, Y0 - 297)])          # smaller than a pixel: its own pixel
    polys.to_file(tmp_path / "p.gpkg")
    r = classify(path, str(tmp_path / "p.gpkg"), tmp_path / "o", label="Type", cv="none", params=RF, **Q)
    assert r.metrics["samples"]["pixels_used"] == 101
    s = classify(path, str(tmp_path / "p.gpkg"), tmp_path / "s", label="Type", cv="none", params=RF,
                 polygons="sample", samples=20, **Q)
    counts = gpd.read_file(tmp_path / "s" / "samples.gpkg")["label"].value_counts().to_dict()
    assert counts == {"forest": 20, "urban": 1}
    assert s.metrics["samples"]["pixels_used"] == 21


def test_real_iamap_similarity_and_classification(iamap, tmp_path):
    src = str(iamap / "test.tif")
    r = similarity(src, str(iamap / "template.shp"), tmp_path / "sim", **Q)
    with rasterio.open(src) as ds:
        data = ds.read().astype(np.float64)
    s = gpd.read_file(tmp_path / "sim" / "samples.gpkg")
    ref = np.stack([data[:, row, col] for row, col in zip(s["row"], s["col"])])
    out = read(r.output)[0][0]
    for row, col in zip(s["row"], s["col"]):
        assert out[row, col] == pytest.approx(unit(data[:, row, col]) @ unit(ref.mean(axis=0)), abs=1e-6)
    assert r.metrics["geometries"] == 11 and r.metrics["outside_raster"] + r.metrics["pixels_used"] == 11
    pts = classify(src, str(iamap / "ml.shp"), tmp_path / "pts", label="Type", folds_n=3, params=RF, **Q)
    assert pts.metrics["classes"] == ["forest", "river"] and pts.metrics["cv"]["pooled"]["accuracy"] > 0.8
    assert pts.metrics["samples"]["outside_raster"] >= 1
    poly = classify(src, str(iamap / "ml_poly.shp"), tmp_path / "poly", label="Type", polygons="sample",
                    samples=600, params=RF, **Q)
    assert poly.metrics["classes"] == ["dense_forest", "open", "river"]
    assert poly.metrics["cv"]["pooled"]["balanced_accuracy"] > 0.6   # chance: 1/3
    assert (tmp_path / "poly" / "metrics.json").exists() and (tmp_path / "poly" / "quicklook.png").exists()
    with pytest.raises(InputError, match="ml.gpkg' declares EPSG:4326 .* impossible in it: the CRS looks wrong"):
        classify(src, str(iamap / "ml.gpkg"), tmp_path / "bad", label="Type", **Q)
    assert not (tmp_path / "bad").exists()


def test_vector_formats_and_a_separate_test_file(scene, training, tmp_path):
    path, _, _ = scene
    gdf = gpd.read_file(training[0])
    gdf.to_file(tmp_path / "t.geojson", driver="GeoJSON")
    gdf.to_parquet(tmp_path / "t.parquet")
    (tmp_path / "shp").mkdir()
    gdf.to_file(tmp_path / "shp" / "t.shp")
    import shutil
    shutil.make_archive(str(tmp_path / "t"), "zip", tmp_path / "shp")
    knn = dict(label="Type", method="KNeighborsClassifier", params={"n_neighbors": 3}, cv="none", **Q)
    maps = [read(classify(path, str(tmp_path / f), tmp_path / f"o_{i}", **knn).output)[0]
            for i, f in enumerate(["t.geojson", "t.parquet", "t.zip"])]
    for m in maps[1:]:
        np.testing.assert_array_equal(maps[0], m)
    gdf.iloc[:60].to_file(tmp_path / "train.gpkg")
    gdf.iloc[60:].to_file(tmp_path / "test.gpkg")
    r = classify(path, str(tmp_path / "train.gpkg"), tmp_path / "tt", test=str(tmp_path / "test.gpkg"),
                 **dict(knn, cv="kfold"))
    assert r.metrics["test"]["n"] == 30 and r.metrics["test"]["accuracy"] > 0.9 and "cv" not in r.metrics
