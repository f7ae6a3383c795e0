"""Job specs: validation up front, and `ray job submit ... -- rayvit run spec.yaml` on a real
`ray start --head` cluster through the Ray Jobs API."""

import json
import subprocess

import numpy as np
import pytest
import yaml
from conftest import ROOT, read, seeded_image, write_raster
from raycluster import BIN

from rayvit.errors import InputError
from rayvit.job import validate

ENCODE = {"inputs": ["scene.tif"], "output": "out/f", "model": "vit_tiny_patch16_224", "pretrained": False,
          "size": 32}


def spec(*steps):
    return {"name": "t", "steps": list(steps)}


@pytest.mark.parametrize("bad, message", [
    (spec({"id": "f", "encoder": ENCODE}), "step 'f': needs exactly one stage among encode, reduce"),
    (spec({"id": "f", "encode": dict(ENCODE, modle="x")}), r"step 'f' \(encode\): unknown field 'modle'; valid: inputs"),
    (spec({"id": "f", "encode": dict(ENCODE, size="big")}), r"step 'f' \(encode\): field 'size' = 'big'"),
    (spec({"id": "f", "encode": {"inputs": ["a.tif"]}}), r"step 'f' \(encode\): missing required field\(s\) output"),
    (spec({"id": "f", "encode": ENCODE}, {"id": "r", "reduce": {"input": "${g.output}", "output": "o"}}),
     r"step 'r' \(reduce\): field 'input' refers to \$\{g.output\}, but no earlier step has id 'g' \(earlier: f\)"),
    (spec({"id": "f", "encode": ENCODE}, {"id": "f", "reduce": {"input": "${f.output}", "output": "o"}}),
     "step 'f': id 'f' is used twice"),
    (spec({"id": "c", "cluster": {"input": "x.tif", "output": "o", "n_clusters": "many"}}),
     "step 'c' \\(cluster\\): field 'n_clusters' = 'many'"),
    ({"steps": []}, "non-empty list 'steps'"),
    (dict(spec({"id": "f", "encode": ENCODE}), adress="x"), "unknown top-level key\\(s\\) adress"),
])
def test_spec_errors_name_the_step_and_field(bad, message):
    with pytest.raises(InputError, match=message):
        validate(bad, "job.yaml")


def test_example_job_specs_are_valid():
    for path in sorted((ROOT / "jobs").glob("*.yaml")):
        validate(yaml.safe_load(path.read_text()), str(path))


@pytest.mark.slow
def test_ray_job_submit_runs_a_pipeline_on_a_ray_start_cluster(cluster, tmp_path):
    work = tmp_path / "job"
    work.mkdir()
    write_raster(work / "scene.tif", seeded_image((3, 64, 96), seed=2))
    out = tmp_path / "out"
    job = spec({"id": "features", "encode": dict(ENCODE, inputs=[str(work / "scene.tif")], output=str(out / "f"))},
               {"id": "pca", "reduce": {"input": "${features.output}", "output": str(out / "pca"), "n_components": 2}},
               {"id": "clusters", "cluster": {"input": "${pca.output}", "output": str(out / "clu"), "n_clusters": 3}})
    (work / "job.yaml").write_text(yaml.safe_dump(job))
    cluster["wait_idle"]()
    r = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"],
                        "--working-dir", str(work), "--", "rayvit", "run", "job.yaml", "--quiet"],
                       capture_output=True, text=True, env=cluster["env"], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in r.stdout.lower()
    assert read(out / "f" / "features.tif")[0].shape == (192, 4, 6)
    assert read(out / "pca" / "reduced.tif")[0].shape == (2, 4, 6)
    labels = read(out / "clu" / "clusters.tif")[0]
    assert labels.shape == (1, 4, 6) and set(np.unique(labels)) <= {0, 1, 2}
    assert json.loads((out / "clu" / "clusters.json").read_text())["input"] == str(out / "pca" / "reduced.tif")


def test_a_job_runs_table_search_and_change_steps(tmp_path, ray_local):
    """Every stage of the registry is a step kind: the embedding stages too, each reading an
    earlier step's product by reference, with the job's report showing the raster ones."""
    import geopandas as gpd
    from shapely.geometry import Point

    from rayvit.job import run

    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 24, 32)).astype("float32")
    b = a.copy()
    b[:, 4:10, 6:14] *= -1                                       # changed between the dates
    write_raster(tmp_path / "a.tif", a)
    write_raster(tmp_path / "b.tif", b)
    gpd.GeoDataFrame(geometry=[Point(500000.0 + 105, 4000000.0 - 105)], crs="EPSG:32633").to_file(tmp_path / "pos.gpkg")
    out = tmp_path / "out"
    job = spec({"id": "sim", "similarity": {"input": str(tmp_path / "a.tif"), "vectors": str(tmp_path / "pos.gpkg"),
                                            "output": str(out / "sim")}},
               {"id": "rows", "table": {"input": str(tmp_path / "a.tif"), "output": str(out / "rows"), "tile": 4}},
               {"id": "hits", "search": {"input": str(tmp_path / "a.tif"), "positives": str(tmp_path / "pos.gpkg"),
                                         "output": str(out / "hits"), "top_k_hits": 5}},
               {"id": "chg", "change": {"a": str(tmp_path / "a.tif"), "b": str(tmp_path / "b.tif"),
                                        "output": str(out / "chg"), "threshold": 1.0}})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    done = run(str(path), progress=False)
    assert done["rows"]["output"] == str(out / "rows") and list((out / "rows").glob("part-*.parquet"))
    hits = gpd.read_parquet(out / "hits" / "hits.parquet")
    assert hits["rank"].tolist() == [1, 2, 3, 4, 5] and (hits.loc[0, "row"], hits.loc[0, "col"]) == (10, 10)
    spots = gpd.read_parquet(out / "chg" / "hotspots.parquet")
    assert spots.loc[0, "n_pixels"] == 48                       # the 6 x 8 px reversed
    page = (out / "report.html").read_text()
    assert all(f"step {s}:" in page for s in ("sim", "hits", "chg")) and "step rows:" not in page
