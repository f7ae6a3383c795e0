"""Inputs on object storage: a real S3 server (SeaweedFS `weed mini`) on 127.0.0.1."""

import os

import numpy as np
import pytest

from conftest import read, run_cli, seeded_image, write_raster
from s3server import weed_mini


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with weed_mini(tmp_path_factory.mktemp("weed")) as server:
        server["fs"].mkdir("rasters")
        yield server


def s3_env(s3, key=None):
    return dict(os.environ, AWS_ACCESS_KEY_ID=key or s3["key"], AWS_SECRET_ACCESS_KEY=s3["secret"],
                AWS_ENDPOINT_URL=s3["endpoint"], AWS_DEFAULT_REGION="us-east-1")


def test_encode_reads_a_mosaic_from_s3_like_from_disk(s3, tmp_path):
    from test_mosaic import cut_into_four
    data = seeded_image((3, 90, 130), seed=4)
    local = cut_into_four(tmp_path, data)
    for path in local:
        s3["fs"].put(path, f"rasters/{os.path.basename(path)}")
    args = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32", "--quiet"]
    a = run_cli("encode", *local, "-o", tmp_path / "local", *args)
    b = run_cli("encode", "s3://rasters/part_*.tif", "-o", tmp_path / "s3", *args, env=s3_env(s3))
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    np.testing.assert_array_equal(read(tmp_path / "local" / "features.tif")[0],
                                  read(tmp_path / "s3" / "features.tif")[0])


def test_s3_errors_name_the_url(s3, tmp_path):
    path = write_raster(tmp_path / "one.tif", seeded_image((3, 32, 32)))
    s3["fs"].put(path, "rasters/one.tif")
    args = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32"]
    missing = run_cli("encode", "s3://rasters/nope.tif", "-o", tmp_path / "m", *args, env=s3_env(s3))
    assert missing.returncode == 2 and "s3://rasters/nope.tif" in missing.stderr
    wrong = run_cli("encode", "s3://rasters/one.tif", "-o", tmp_path / "w", *args,
                    env=s3_env(s3, key="not-the-key"))
    assert wrong.returncode == 2 and "s3://rasters/one.tif' was denied; check the credentials" in wrong.stderr
    assert s3["secret"] not in wrong.stderr + missing.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "w").exists()
