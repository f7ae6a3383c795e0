"""The sources index: headers read once and kept; a later run over the same files opens none
of them, a changed file is read again; GDAL opens the index as the input mosaic (GTI), and
rayvit takes it as an input."""

import os

import numpy as np
import pytest
import rasterio
from conftest import cut_into_four, seeded_image, write_raster

from rayvit.errors import InputError, RasterOpenError
from rayvit.io import sources
from rayvit.io.mosaic import describe, open_mosaic


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache of its own, indexing lists from one file (the product indexes 64 and more)."""
    monkeypatch.setenv("RAYVIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "INDEX_FILES", 1)
    return tmp_path / "cache"


def test_short_lists_are_not_indexed_and_the_cache_keeps_the_latest(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYVIT_CACHE", str(tmp_path / "cache"))
    files = cut_into_four(tmp_path, seeded_image((3, 90, 130), seed=2))
    assert sources.INDEX_FILES > 4
    sources.describe_all(files, describe)
    assert not os.path.exists(sources.index_path(files))
    monkeypatch.setattr(sources, "INDEX_FILES", 1)
    lists = [files[:k] for k in range(1, 5)]
    for i, urls in enumerate(lists):
        sources.describe_all(urls, describe)
        os.utime(sources.index_path(urls), (1000 + i, 1000 + i))      # written in this order
    sources.prune(sources.cache_dir(), keep=2)
    assert [os.path.exists(sources.index_path(urls)) for urls in lists] == [False, False, True, True]


def test_a_later_run_reads_the_index_and_describes_only_files_that_changed(tmp_path, cache):
    files = cut_into_four(tmp_path, seeded_image((3, 90, 130), seed=2))
    calls = []

    def counting(url):
        calls.append(url)
        return describe(url)

    first = sources.describe_all(files, counting)
    assert sorted(calls) == sorted(files) and first == [describe(f) for f in files]
    assert os.path.exists(sources.index_path(files)) and str(cache) in sources.index_path(files)
    calls.clear()
    assert sources.describe_all(files, counting) == first and calls == []
    write_raster(files[2], seeded_image((2, 53, 69), seed=3),         # rewritten: 2 bands now
                 rasterio.Affine(*first[2].transform))
    third = sources.describe_all(files, counting)
    assert calls == [files[2]] and third[2].count == 2 and third[:2] == first[:2] and third[3] == first[3]
    calls.clear()
    assert sources.describe_all(files, counting) == third and calls == []
    # another list of files is another index
    assert sources.index_path(files[:3]) != sources.index_path(files)


def test_a_bad_file_is_returned_in_its_place_and_not_kept(tmp_path, cache):
    files = cut_into_four(tmp_path, seeded_image((3, 90, 130), seed=2))
    files[1] = str(tmp_path / "missing.tif")
    out = sources.describe_all(files, describe)
    assert isinstance(out[1], RasterOpenError) and "missing.tif" in str(out[1])
    assert list(sources.read_index(sources.index_path(files))[0]) == [files[0], files[2], files[3]]


SHARED_AMONG_PROCESSES = """
import os, sys
from functools import partial
from rayvit.errors import RasterOpenError
from rayvit.io import sources
from rayvit.io.mosaic import describe

def describe_noting_pid(pids, url):
    with open(pids, "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    return describe(url)

sources.PROCESS_FROM = sources.INDEX_FILES = 2
sources.processes = lambda n: 2             # as on a machine of 2 CPUs or more
files, pids = sys.argv[1:5], sys.argv[5]
out = sources.describe_all(files, partial(describe_noting_pid, pids))
ran = {int(p) for p in open(pids).read().split()}
assert ran and os.getpid() not in ran, ran                   # read elsewhere, not here
assert isinstance(out[1], RasterOpenError) and "missing.tif" in str(out[1])   # in its place
assert [out[i] for i in (0, 2, 3)] == [describe(files[i]) for i in (0, 2, 3)]
assert list(sources.read_index(sources.index_path(files))[0]) == [files[0], files[2], files[3]]
# a describe() that cannot be sent to another process is run here
os.remove(pids)
assert sources.describe_all(files[:1], lambda u: describe_noting_pid(pids, u))[0] == describe(files[0])
assert {int(p) for p in open(pids).read().split()} == {os.getpid()}
print("ok")
"""


def test_many_headers_are_shared_among_processes_with_the_same_result(tmp_path, cache):
    """In a process of its own: one that runs Ray (this one may) reads them itself."""
    import subprocess
    import sys

    files = cut_into_four(tmp_path, seeded_image((3, 90, 130), seed=2))
    files[1] = str(tmp_path / "missing.tif")
    script = tmp_path / "shared.py"
    script.write_text(SHARED_AMONG_PROCESSES)
    run = subprocess.run([sys.executable, str(script), *files, str(tmp_path / "pids")],
                         capture_output=True, text=True, env=dict(os.environ, RAYVIT_CACHE=str(cache)))
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_gdal_opens_the_index_as_the_mosaic_and_rayvit_takes_it_as_input(tmp_path, cache):
    data = seeded_image((3, 90, 130), seed=5)
    files = cut_into_four(tmp_path, data)
    mosaic = open_mosaic(files)
    index = sources.index_path(files)
    with rasterio.open(index) as ds:                   # GDAL's GTI driver
        assert ds.driver == "GTI" and (ds.width, ds.height, ds.count) == (130, 90, 3)
        assert ds.transform == mosaic.grid.affine
        np.testing.assert_array_equal(ds.read(), data)
    again = open_mosaic([index])
    assert again.sources == mosaic.sources and again.grid == mosaic.grid    # rows in input order
    a, _ = again.read(10, 20, 50, 70)
    np.testing.assert_array_equal(a, data[:, 10:60, 20:90])


def test_an_index_input_that_is_missing_or_not_ours_is_a_clear_error(tmp_path, cache):
    with pytest.raises(RasterOpenError, match="nothing.gti.gpkg.*does not exist"):
        open_mosaic([str(tmp_path / "nothing.gti.gpkg")])
    import geopandas as gpd
    from shapely import box
    other = str(tmp_path / "other.gti.gpkg")
    gpd.GeoDataFrame({"location": ["a.tif"]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:32633").to_file(other)
    with pytest.raises(InputError, match="other.gti.gpkg.*not a rayvit sources index"):
        open_mosaic([other])


def test_where_files_overlap_gdal_and_rayvit_take_the_first_file(tmp_path, cache):
    from rasterio.transform import from_origin
    a = write_raster(tmp_path / "a.tif", np.full((1, 20, 20), 1, np.uint8), from_origin(500000.0, 4000000.0, 10, 10))
    b = write_raster(tmp_path / "b.tif", np.full((1, 20, 20), 2, np.uint8), from_origin(500100.0, 3999900.0, 10, 10))
    for files, top in (([a, b], 1), ([b, a], 2)):
        mosaic = open_mosaic(files)
        data, _ = mosaic.read(0, 0, 30, 30)
        assert data[0, 15, 15] == top                  # inside both
        with rasterio.open(sources.index_path(files)) as ds:
            np.testing.assert_array_equal(ds.read(), data)


def test_the_dry_run_names_the_sources_index_a_later_run_will_read(tmp_path, cache):
    from rayvit.encode.plan import EncodeOptions, plan_encode

    files = cut_into_four(tmp_path, seeded_image((3, 90, 130), seed=5))
    plan = plan_encode(files, EncodeOptions(model="rayvit_patchmean_p4", pretrained=False, size=16))
    assert f"; sources index {sources.index_path(files)}" in plan.describe().splitlines()[0]
