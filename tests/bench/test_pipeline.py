"""`rayvit bench pipeline` on a tiny area: every case it reports, split by role, on the same
pixels whatever the input's codec, and what Ray's object store costs per tile."""

import numpy as np
import pytest
import rasterio

from rayvit.bench.pipeline import bench_pipeline


@pytest.mark.slow
def test_the_pipeline_bench_reports_each_case_by_role_on_the_same_pixels(ray_local, tmp_path):
    rows = bench_pipeline(widths=(768,), dtypes=("float16",), tiles=(4, 9), size=32, work=str(tmp_path),
                          formats=("gtiff",))
    cases = [(r["format"], r["compress"], r["input"]) for r in rows if "ms_per_tile" in r]
    assert cases == [("gtiff", "zstd", "deflate"), ("gtiff", "none", "deflate"), ("gtiff", "zstd", "zstd"),
                     ("gtiff", "none", "zstd")]
    for r in rows:
        if "ms_per_tile" in r:
            assert set(r["ms_per_tile"]) == {"device actors", "read tasks", "write tasks", "driver", "Ray services"}
            assert r["total_ms_per_tile"] == sum(r["ms_per_tile"].values()) and r["tiles_per_s"] > 0
    (transport,) = [r["transport_ms_per_tile"] for r in rows if "transport_ms_per_tile" in r]
    assert set(transport) == {"window", "features"} and min(transport.values()) > 0
    assert rows[-1]["peak_driver_rss_mb"] > 0
    for n in (4, 9):                        # the zstd inputs: the deflate ones' pixels, recompressed
        with rasterio.open(tmp_path / f"pipeline_{n}.tif") as a, rasterio.open(tmp_path / f"pipeline_{n}_zstd.tif") as b:
            assert (a.compression.value, b.compression.value) == ("DEFLATE", "ZSTD")
            assert b.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2" and (a.crs, a.transform) == (b.crs, b.transform)
            np.testing.assert_array_equal(a.read(), b.read())
