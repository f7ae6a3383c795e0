"""The runner every analysis stage shares, and encode and table: a crash at any one of their
writes (in the driver; blocks and table parts are written by tasks, before) never leaves a
product whose sidecar exists while a file of the run is missing or partial, and re-running the
same command then finishes it with the outputs of a run that never crashed. A bad output
location fails before any pass over the data."""

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from conftest import write_raster
from shapely.geometry import Point

from rayvit.analysis.change import change
from rayvit.analysis.classify import classify
from rayvit.analysis.cluster import cluster
from rayvit.analysis.reduce import reduce
from rayvit.analysis.search import search
from rayvit.analysis.similarity import similarity
from rayvit.analysis.table import table
from rayvit.encode.pipeline import encode
from rayvit.errors import OutputError
from rayvit.io import storage

Q = {"progress": False}


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("stage_inputs")
    rng = np.random.default_rng(7)
    a = rng.normal(size=(4, 20, 24)).astype("float32")
    b = a.copy()
    b[:, 3:9, 4:12] *= -1
    points = [Point(500000.0 + 10 * c + 5, 4000000.0 - 10 * r - 5) for r, c in ((2, 2), (5, 17), (15, 6), (12, 20))]
    gpd.GeoDataFrame({"Type": ["x", "y", "x", "y"], "hit": [1, 0, 1, 0]}, geometry=points,
                     crs="EPSG:32633").to_file(d / "pts.gpkg")
    image = rng.integers(0, 200, size=(3, 40, 48)).astype("uint8")
    return (write_raster(d / "a.tif", a), write_raster(d / "b.tif", b), str(d / "pts.gpkg"),
            write_raster(d / "image.tif", image))


STAGES = {
    "encode": lambda i, out: encode(i[3], str(out), model="rayvit_patchmean_p4", size=16, **Q),
    "encode-zarr": lambda i, out: encode(i[3], str(out), model="rayvit_patchmean_p4", size=16, format="zarr",
                                         block_size=2, **Q),
    "table": lambda i, out: table(i[0], str(out), tile=4, **Q),
    "reduce": lambda i, out: reduce(i[0], out, n_components=2, **Q),
    "cluster": lambda i, out: cluster(i[0], out, n_clusters=3, **Q),
    "similarity": lambda i, out: similarity(i[0], i[2], out, by="Type", **Q),
    "classify": lambda i, out: classify(i[0], i[2], out, label="Type", cv="none", proba=True, **Q),
    "search": lambda i, out: search(i[0], i[2], out, label="hit", top_k_hits=4, **Q),
    "change": lambda i, out: change(i[0], i[1], out, threshold=1.0, **Q),
}


def outputs(folder: Path) -> dict:
    """What a run decides (not when it ran): each raster's pixels, each table's rows, the metrics."""
    out = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".tif" or path.name.endswith(".gti.gpkg"):
            with rasterio.open(path) as ds:
                out[path.name] = ds.read().tobytes()
        elif path.suffix == ".zarr":
            import zarr
            out[path.name] = zarr.open_array(path / "features", mode="r")[:].tobytes()
        elif path.suffix == ".parquet":
            out[path.name] = gpd.read_parquet(path).drop(columns="geometry").to_json(default_handler=str)
        elif path.name == "samples.gpkg":
            out[path.name] = gpd.read_file(path).drop(columns="geometry").to_json()
        elif path.name == "metrics.json":
            out[path.name] = path.read_text()
    return out


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_crash_after_any_write_leaves_no_sidecar_and_a_rerun_completes(stage, inputs, tmp_path, ray_local,
                                                                         monkeypatch):
    real = storage.atomic_write
    written = []

    def counting(path, write):
        written.append(Path(path).name)
        return real(path, write)

    monkeypatch.setattr(storage, "atomic_write", counting)
    result = STAGES[stage](inputs, tmp_path / "clean")
    expected = outputs(tmp_path / "clean")
    finals = result.extra["outputs"] if hasattr(result, "extra") else [result.output]
    sidecars = {"_table.json"} if stage == "table" else {Path(u).name.split(".")[0] + ".json" for u in finals}
    assert set(written[-len(sidecars):]) == sidecars           # the sidecars are the last files written
    assert stage == "table" or "report.html" in written
    for n in range(len(written)):
        folder, calls = tmp_path / f"crash{n}", []

        def crashing(path, write, n=n, calls=calls):
            calls.append(path)
            if len(calls) > n:
                raise Crash(path)
            return real(path, write)

        monkeypatch.setattr(storage, "atomic_write", crashing)
        with pytest.raises(Crash):
            STAGES[stage](inputs, folder)
        if {p.name for p in folder.iterdir()} & sidecars:      # a product claims to be complete: it is,
            assert outputs(folder) == expected, (n, written[n])  # and so is every file beside it
        monkeypatch.setattr(storage, "atomic_write", real)
        STAGES[stage](inputs, folder)                            # the same command again
        assert outputs(folder) == expected, (n, written[n])
        for sidecar in sidecars:
            assert json.loads((folder / sidecar).read_text())


def test_a_bad_output_location_fails_before_any_pass_and_writes_nothing(inputs, tmp_path, ray_local, monkeypatch):
    from rayvit.analysis.source import BlockSource

    def tripwire(*args, **kwargs):
        raise AssertionError("a pass over the data ran before the output location was checked")

    monkeypatch.setattr(BlockSource, "statistics", tripwire)
    monkeypatch.setattr(BlockSource, "map", tripwire)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match="is a file"):
        reduce(inputs[0], str(tmp_path / "file" / "out"), **Q)
    other = tmp_path / "other"
    reduce(inputs[0], str(other), n_components=2, progress=False, dry_run=True)
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"fingerprint": "another run"}))
    with pytest.raises(OutputError, match="holds a different run"):
        cluster(inputs[0], str(other), **Q)
    assert sorted(p.name for p in other.iterdir()) == ["run.json"]
