"""The stage registry: a new stage is one file plus one registry line, and then runs from the
command line, from a job spec and from Python (``rayvit.<name>``), with nothing else added."""

import sys

import numpy as np
import pytest
import rasterio
import yaml
from conftest import write_raster

import rayvit
from rayvit import stages

NORM = '''
"""``norm``: the length of each pixel's vector (the README's example of a new stage)."""
import numpy as np

from rayvit.analysis.source import BlockSource
from rayvit.analysis.stage import Product, Stage, run


class Norm(Stage):
    name, product = "norm", "norm"

    def fit(self, source, pixels):
        self.model_ = np.linalg.norm
        return self

    def transform(self, x, product):
        return self.model_(x, axis=1, keepdims=True)

    def products(self):
        return [Product("norm", 1, "float32", np.nan, ["norm"])]


def norm(input, output, bands=None, block_size=512, overwrite=False, address=None, progress=True,
         dry_run=False):
    return run(Norm(), BlockSource.open(input, bands), output, None, block_size, overwrite, address,
               progress, dry_run)


def arguments(p):
    from rayvit.options import add_ray_options, analysis_common
    analysis_common(p, standardize=False)
'''


@pytest.fixture
def norm_stage(tmp_path, monkeypatch):
    (tmp_path / "norm_stage.py").write_text(NORM)
    monkeypatch.syspath_prepend(str(tmp_path))
    import norm_stage

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(norm_stage)     # Ray workers do not see tmp_path
    monkeypatch.setitem(stages.STAGES, "norm", stages.Entry("norm", "norm_stage", "raster -> vector lengths"))
    yield
    cloudpickle.unregister_pickle_by_value(norm_stage)
    sys.modules.pop("norm_stage", None)
    rayvit.__dict__.pop("norm", None)


def test_a_stage_registered_with_one_line_runs_from_the_cli_a_job_and_python(norm_stage, tmp_path, ray_local):
    from rayvit.cli import main
    from rayvit.job import run

    data = np.random.default_rng(0).normal(size=(3, 12, 20)).astype("float32")
    path = write_raster(tmp_path / "f.tif", data)
    expected = np.linalg.norm(data.astype(np.float64), axis=0).astype("float32")
    assert main(["norm", path, "-o", str(tmp_path / "cli"), "--quiet"]) == 0
    job = {"name": "n", "steps": [{"id": "n", "norm": {"input": path, "output": str(tmp_path / "job")}}]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    run(str(tmp_path / "job.yaml"), progress=False)
    rayvit.norm(path, str(tmp_path / "py"), progress=False)
    for out in ("cli", "job", "py"):
        with rasterio.open(tmp_path / out / "norm.tif") as ds:
            np.testing.assert_allclose(ds.read(1), expected, rtol=1e-6)
        assert (tmp_path / out / "norm.json").exists() and (tmp_path / out / "report.html").exists()
    assert "norm" in dir(rayvit)
