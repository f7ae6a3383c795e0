"""Object stores against the session's real local servers: the bucket round trip over s3://
(SeaweedFS), gs:// (gcp-storage-emulator) and az:// (Azurite); and http(s):// against an HTTP
server with Range requests. (What only s3:// does has its own file, test_s3.py.)"""

import json
import os
import sys

import numpy as np
import pytest

import rayvit
from conftest import read, run_cli, seeded_image, store, write_raster
from emulators import range_http_server

ENC = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32", "--quiet"]
pytestmark = pytest.mark.usefixtures("ray_local")


ROUND_TRIP = seeded_image((3, 96, 128), seed=11)
BLOCKS = ["--blocks", "--block-size", "2"]


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    """The round trip's two steps on local disk: its reduced.tif's pixels."""
    tmp = tmp_path_factory.mktemp("disk")
    local = write_raster(tmp / "l.tif", ROUND_TRIP)
    assert run_cli("encode", local, "-o", tmp / "lf", *BLOCKS, *ENC).returncode == 0
    assert run_cli("reduce", tmp / "lf" / "features.vrt", "-o", tmp / "lr", "--quiet").returncode == 0
    return read(tmp / "lr" / "reduced.tif")[0]


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["s3", "gs", "az"])
def test_encode_then_reduce_in_the_bucket_equals_the_run_on_disk(stores, scheme, on_disk, tmp_path):
    """Inputs and outputs in the bucket (features as blocks the workers upload, and a single
    COG from reduce) give the same pixels as on local disk; no credential in any output."""
    bucket = store(stores, scheme)
    proto, fs = scheme, bucket["fs"]
    fs.put_file(write_raster(tmp_path / "scene.tif", ROUND_TRIP), "rasters/rt-scene.tif")
    env = dict(os.environ, RAYVIT_STAGING=str(tmp_path / "staging"))
    enc = run_cli("encode", f"{proto}://rasters/rt-scene.tif", "-o", f"{proto}://results/rt/feat", *BLOCKS, *ENC,
                  env=env)
    assert enc.returncode == 0, enc.stderr
    red = run_cli("reduce", f"{proto}://results/rt/feat/features.vrt", "-o", f"{proto}://results/rt/red", "--quiet",
                  env=env)
    assert red.returncode == 0, red.stderr
    listing = {p.rsplit("/", 1)[1] for p in fs.find("results/rt/feat")}
    assert {"features.json", "features.vrt", "report.html", "run.json"} <= listing
    assert sum(name.startswith("block_") for name in listing) == 12
    assert {"reduced.tif", "reduced.json"} <= {p.rsplit("/", 1)[1] for p in fs.find("results/rt/red")}
    fs.get_file("results/rt/red/reduced.tif", str(tmp_path / "red.tif"))
    np.testing.assert_array_equal(read(tmp_path / "red.tif")[0], on_disk)        # the same two steps on disk
    sidecar = fs.cat_file("results/rt/feat/features.json").decode()
    assert json.loads(sidecar)["inputs"] == [f"{proto}://rasters/rt-scene.tif"]
    secrets = {"s3": [bucket.get("secret")], "gs": [],
               "az": [bucket.get("key"), *bucket["env"].values()]}[scheme]
    for text in (enc.stdout, enc.stderr, red.stdout, red.stderr, sidecar,
                 fs.cat_file("results/rt/red/reduced.json").decode()):
        assert not any(secret in text for secret in secrets)


@pytest.mark.parametrize("proto", ["gs", "az"])
def test_a_missing_object_is_an_error_naming_it_and_where_credentials_come_from(stores, proto, tmp_path):
    store(stores, proto)
    r = run_cli("encode", f"{proto}://rasters/nope.tif", "-o", tmp_path / "o", *ENC)
    assert r.returncode == 2 and f"{proto}://rasters/nope.tif" in r.stderr, r.stderr
    assert ("STORAGE_EMULATOR_HOST" if proto == "gs" else "AZURE_STORAGE_CONNECTION_STRING") in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("url, package, extra", [("gs://bucket/x.tif", "gcsfs", "gcs"),
                                                 ("az://container/x.tif", "adlfs", "azure"),
                                                 ("abfs://container/x.tif", "adlfs", "azure")])
def test_a_scheme_whose_package_is_missing_says_how_to_install_it(tmp_path, monkeypatch, url, package, extra):
    """As an input and as an output: exit 2, the install command, no traceback, nothing written."""
    local = write_raster(tmp_path / "in.tif", seeded_image((3, 32, 32)))
    monkeypatch.setitem(sys.modules, package, None)                # as if it were not installed
    for args in ([url, "-o", str(tmp_path / "o")], [local, "-o", url.rsplit("/", 1)[0] + "/out"]):
        r = run_cli("encode", *args, *ENC)
        assert r.returncode == 2, r.stderr
        assert f"pip install 'rayvit[{extra}]'" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "o").exists()


def test_an_unknown_scheme_is_an_error_listing_the_ones_read(tmp_path):
    r = run_cli("encode", "ftp://host/x.tif", "-o", tmp_path / "o", *ENC)
    assert r.returncode == 2 and "does not read ftp:// URLs" in r.stderr and "gs://" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_an_http_window_read_fetches_a_small_part_of_the_file(tmp_path):
    """A 2048 x 2048 COG (16 MB, 256-px tiles) over HTTP: encoding a 64 x 64 px extent of it
    downloads a small share of the file (range requests: the header and one tile, in each of
    the few processes that open it), and equals the same extent read from disk."""
    data = seeded_image((3, 2048, 2048), seed=5, high=255)
    served = tmp_path / "www"
    served.mkdir()
    path = write_raster(served / "big.tif", data, driver="COG", compress="deflate", blocksize=256)
    size = os.path.getsize(path)
    extent = ["--extent", "500000,3998720,500640,3999360"]        # 64 x 64 px, inside one 256-px tile
    with range_http_server(served) as (server, base):
        r = run_cli("encode", f"{base}/big.tif", "-o", tmp_path / "http", *extent, *ENC)
        assert r.returncode == 0, r.stderr
        fetched = server.bytes_served
    local = run_cli("encode", path, "-o", tmp_path / "disk", *extent, *ENC)
    assert local.returncode == 0, local.stderr
    np.testing.assert_array_equal(read(tmp_path / "http" / "features.tif")[0],
                                  read(tmp_path / "disk" / "features.tif")[0])
    assert fetched < 0.1 * size, f"{fetched} of {size} bytes served"


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["s3", "gs", "az"])
def test_a_zarr_product_in_the_bucket_equals_the_one_on_disk_and_opens_last(stores, scheme, tmp_path):
    """--format zarr to a bucket: the workers put their shards in the store's final place, and
    the store's root metadata and the sidecar come last (the store cannot be opened before);
    the bucket's store holds the very values of the one on disk, and an analysis stage reads
    it there."""
    import xarray as xr
    import zarr

    bucket = store(stores, scheme)
    fs = bucket["fs"]
    local = write_raster(tmp_path / "z.tif", ROUND_TRIP)
    zarr_args = ["--format", "zarr", "--block-size", "2", "--dtype", "float16", *ENC]
    env = dict(os.environ, RAYVIT_STAGING=str(tmp_path / "staging"))
    assert run_cli("encode", local, "-o", tmp_path / "disk", *zarr_args).returncode == 0
    r = run_cli("encode", local, "-o", f"{scheme}://results/zr", *zarr_args, env=env)
    assert r.returncode == 0, r.stderr
    listing = sorted(fs.find("results/zr"))
    assert any("/features.zarr/features/c/0/" in p for p in listing) and "results/zr/features.json" in listing
    from rayvit.io import storage
    got = xr.open_zarr(f"{scheme}://results/zr/features.zarr",
                       storage_options=storage.storage_options(f"{scheme}://results/zr"))["features"].values
    want = zarr.open_array(str(tmp_path / "disk" / "features.zarr" / "features"), mode="r")[:]
    np.testing.assert_array_equal(got, want)
    k = run_cli("cluster", f"{scheme}://results/zr/features.zarr", "-o", tmp_path / "k", "--n-clusters", "3",
                "--quiet", env=env)
    assert k.returncode == 0, k.stderr
    d = run_cli("cluster", tmp_path / "disk" / "features.zarr", "-o", tmp_path / "kd", "--n-clusters", "3", "--quiet")
    np.testing.assert_array_equal(read(tmp_path / "k" / "clusters.tif")[0], read(tmp_path / "kd" / "clusters.tif")[0])
    # an analysis product as Zarr in the bucket: its shards from the workers, its map drawn from
    # them (shards of several chunks: their index is read as a byte range, chunked.location)
    z = run_cli("cluster", f"{scheme}://results/zr/features.zarr", "-o", f"{scheme}://results/kz", "--n-clusters",
                "3", "--format", "zarr", "--quiet", env=env)
    assert z.returncode == 0, z.stderr
    labels = rayvit.open(f"{scheme}://results/kz/clusters.zarr").values
    want, profile = read(tmp_path / "kd" / "clusters.tif")[:2]
    want = np.where(want == profile["nodata"], np.nan, want).astype(np.float64)
    np.testing.assert_array_equal(labels, want)
    from PIL import Image
    with fs.open("results/kz/quicklook.png") as fh:
        assert len(np.unique(np.asarray(Image.open(fh).convert("RGB")).reshape(-1, 3), axis=0)) >= 3
