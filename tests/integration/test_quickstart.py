"""The README's first command, exactly as a new user runs it, in a clean directory: the
quickstart job goes from a generated raster to maps and a report, quietly; the report
renders in a real headless browser."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import ROOT, readme_first_command
from sklearn.metrics import adjusted_rand_score

from rayvit.landscape import CLASSES

# Documented in the README ("Quickstart"): with random weights the 4-cluster KMeans map of the
# generated landscape agrees with its truth to an adjusted Rand index of ~0.75 (measured);
# the test asks for 0.6. The classifier, trained on 12 polygons, maps > 0.9 of it right.
MIN_ARI = 0.6
MIN_ACCURACY = 0.9
MAPS = {"features": "features.tif", "pca": "reduced.tif", "clusters": "clusters.tif",
        "similarity": "similarity.tif", "classes": "prediction.tif"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quickstart(quickstart_run):
    """The README's first command's run (started with the session: conftest.quickstart_run):
    its clean work directory and what it gave."""
    work, job = quickstart_run
    return work, job.wait(timeout=900)


def test_the_readme_first_command_installs_as_ci_does_then_runs_the_job():
    install, _, run = readme_first_command().rpartition(" && ")
    assert install in (ROOT / ".ci" / "run").read_text(), f"README's install steps {install!r} differ from .ci/run's"
    assert run.startswith(".venv/bin/rayvit run jobs/quickstart.yaml"), run


def majority(truth: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The most frequent class under each pixel of a coarser grid."""
    h, w = shape
    f = truth.shape[0] // h
    blocks = truth[:h * f, :w * f].reshape(h, f, w, f).transpose(0, 2, 1, 3).reshape(h * w, f * f)
    return np.array([np.bincount(b, minlength=len(CLASSES)).argmax() for b in blocks]).reshape(h, w)


def test_quickstart_goes_from_raster_to_maps_quietly(quickstart):
    work, r = quickstart
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "warning" not in out.lower(), out
    out_dir = work / "quickstart-out"
    assert f"report {Path('quickstart-out') / 'report.html'}" in r.stdout
    assert (out_dir / "report.html").stat().st_size > 0
    for step, raster in MAPS.items():
        assert (out_dir / step / raster).exists() and (out_dir / step / "report.html").exists(), step
    # every step printed its timing breakdown, and the encode sidecar carries it
    assert r.stdout.count("\ntime: ") == len(MAPS)
    timings = json.loads((out_dir / "features" / "features.json").read_text())["timings"]
    phases = ("planning_s", "ray_start_s", "actor_start_s", "encoding_s", "writing_s", "commit_s")
    assert all(timings[k] >= 0 for k in phases)
    assert sum(timings[k] for k in phases if k != "writing_s") <= timings["total_s"] + 1e-6


def test_quickstart_maps_recover_the_generated_truth(quickstart):
    work, r = quickstart
    assert r.returncode == 0, r.stderr[-3000:]
    out_dir = work / "quickstart-out"
    with rasterio.open(out_dir / "sample" / "truth.tif") as ds:
        truth = ds.read(1)
    with rasterio.open(out_dir / "clusters" / "clusters.tif") as ds:
        clusters = ds.read(1)
    expected = majority(truth, clusters.shape)
    assert adjusted_rand_score(expected.ravel(), clusters.ravel()) > MIN_ARI
    with rasterio.open(out_dir / "classes" / "prediction.tif") as ds:
        codes = ds.read(1)
    names = json.loads((out_dir / "classes" / "prediction.json").read_text())["categories"]
    mapped = np.vectorize(lambda c: CLASSES.index(names[c]))(codes)
    assert (mapped == expected).mean() > MIN_ACCURACY
    # similarity to the water references is higher over water than anywhere else
    with rasterio.open(out_dir / "similarity" / "similarity.tif") as ds:
        water = ds.read(list(ds.descriptions).index("water") + 1)
    assert water[expected == 0].mean() > water[expected != 0].mean() + 0.1


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian package chromium); "
                                             ".ci/run installs it where apt-get can")
def test_job_report_renders_in_a_headless_browser(quickstart, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    work, r = quickstart
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = {step: json.loads((work / "quickstart-out" / step / "metrics.json").read_text())
               for step in MAPS if step != "features"}
    # two maps per step (input imagery and the product), an explained-variance plot, a cluster
    # size plot, a histogram per similarity band and a confusion matrix
    expected = 2 * len(MAPS) + 1 + 1 + len(metrics["similarity"]["bands"]) + 1
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto((work / "quickstart-out" / "report.html").as_uri())
        page.wait_for_load_state("load")
        total, loaded = page.evaluate("() => [document.images.length, Array.from(document.images)"
                                      ".filter(i => i.complete && i.naturalWidth > 0).length]")
        links = page.evaluate("() => Array.from(document.querySelectorAll('nav a'))"
                              ".map(a => document.querySelector(a.getAttribute('href')) !== null)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert (total, loaded) == (expected, expected)
    assert links == [True] * len(MAPS)          # the step list links to every step's section
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("RGB")).astype(np.uint32)
    colours = np.unique(shot[..., 0] << 16 | shot[..., 1] << 8 | shot[..., 2])   # one int per RGB triple
    assert shot.shape[0] > 3000 and len(colours) > 1000   # not blank
