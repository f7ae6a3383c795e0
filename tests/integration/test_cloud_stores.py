"""gs://, az:// and http(s):// against real local servers: gcp-storage-emulator, Azurite and
an HTTP server with Range requests. (s3:// has its own file, test_s3.py.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import read, run_cli, seeded_image, write_raster
from emulators import azurite, gcs_emulator, range_http_server

ENC = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32", "--quiet"]


@pytest.fixture(scope="module", params=["gs", "az"])
def store(request, tmp_path_factory):
    """A bucket/container named ``rasters`` on the emulator of the scheme."""
    if request.param == "gs":
        server = gcs_emulator()
    else:
        server = azurite(tmp_path_factory.mktemp("azurite"))
    with server as s:
        s["fs"].mkdir("rasters")
        s["fs"].mkdir("results")
        yield dict(s, scheme=request.param)


def test_encode_then_reduce_in_the_bucket_equals_the_run_on_disk(store, tmp_path):
    """Inputs and outputs in the bucket (features as blocks the workers upload, and a single
    COG from reduce) give the same pixels as on local disk; no credential in any output."""
    proto, fs = store["scheme"], store["fs"]
    data = seeded_image((3, 96, 128), seed=11)
    fs.put_file(write_raster(tmp_path / "scene.tif", data), "rasters/scene.tif")
    env = dict(os.environ, **store["env"], RAYVIT_STAGING=str(tmp_path / "staging"))
    blocks = ["--blocks", "--block-size", "2"]
    enc = run_cli("encode", f"{proto}://rasters/scene.tif", "-o", f"{proto}://results/feat", *blocks, *ENC, env=env)
    assert enc.returncode == 0, enc.stderr
    red = run_cli("reduce", f"{proto}://results/feat/features.vrt", "-o", f"{proto}://results/red", "--quiet",
                  env=env)
    assert red.returncode == 0, red.stderr
    listing = {p.rsplit("/", 1)[1] for p in fs.find("results/feat")}
    assert {"features.json", "features.vrt", "report.html", "run.json"} <= listing
    assert sum(name.startswith("block_") for name in listing) == 12
    assert {"reduced.tif", "reduced.json"} <= {p.rsplit("/", 1)[1] for p in fs.find("results/red")}
    # the same two steps on local disk
    local = write_raster(tmp_path / "l.tif", data)
    assert run_cli("encode", local, "-o", tmp_path / "lf", *blocks, *ENC).returncode == 0
    assert run_cli("reduce", tmp_path / "lf" / "features.vrt", "-o", tmp_path / "lr", "--quiet").returncode == 0
    fs.get_file("results/red/reduced.tif", str(tmp_path / "red.tif"))
    np.testing.assert_array_equal(read(tmp_path / "red.tif")[0], read(tmp_path / "lr" / "reduced.tif")[0])
    sidecar = fs.cat_file("results/feat/features.json").decode()
    assert json.loads(sidecar)["inputs"] == [f"{proto}://rasters/scene.tif"]
    secrets = [v for v in store["env"].values() if "AccountKey" in v] + ([store["key"]] if "key" in store else [])
    for text in (enc.stdout, enc.stderr, red.stdout, red.stderr, sidecar,
                 fs.cat_file("results/red/reduced.json").decode()):
        assert not any(secret in text for secret in secrets)


def test_a_missing_object_is_an_error_naming_it_and_where_credentials_come_from(store, tmp_path):
    proto = store["scheme"]
    env = dict(os.environ, **store["env"], RAYVIT_STAGING=str(tmp_path / "staging"))
    r = run_cli("encode", f"{proto}://rasters/nope.tif", "-o", tmp_path / "o", *ENC, env=env)
    assert r.returncode == 2 and f"{proto}://rasters/nope.tif" in r.stderr, r.stderr
    assert ("STORAGE_EMULATOR_HOST" if proto == "gs" else "AZURE_STORAGE_CONNECTION_STRING") in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("url, package, extra", [("gs://bucket/x.tif", "gcsfs", "gcs"),
                                                 ("az://container/x.tif", "adlfs", "azure"),
                                                 ("abfs://container/x.tif", "adlfs", "azure")])
def test_a_scheme_whose_package_is_missing_says_how_to_install_it(tmp_path, url, package, extra):
    """As an input and as an output: exit 2, the install command, no traceback, nothing written."""
    local = write_raster(tmp_path / "in.tif", seeded_image((3, 32, 32)))
    for args in ([url, "-o", str(tmp_path / "o")], [local, "-o", url.rsplit("/", 1)[0] + "/out"]):
        code = (f"import sys; sys.modules[{package!r}] = None\n"     # as if it were not installed
                "from rayvit.cli import main\n"
                f"sys.exit(main(['encode', *{args!r}, *{ENC!r}]))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        assert f"pip install 'rayvit[{extra}]'" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "o").exists()


def test_an_unknown_scheme_is_an_error_listing_the_ones_read(tmp_path):
    r = run_cli("encode", "ftp://host/x.tif", "-o", tmp_path / "o", *ENC)
    assert r.returncode == 2 and "does not read ftp:// URLs" in r.stderr and "gs://" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


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
