"""URL schemes, their packages, redaction of secrets, and the raster opener's read-ahead."""

import pytest

from rayvit.errors import InputError, MissingDependencyError
from rayvit.io import storage


@pytest.mark.parametrize("url, package", [("s3://b/x.tif", "s3fs"), ("gs://b/x.tif", "gcsfs"),
                                          ("gcs://b/x.tif", "gcsfs"), ("az://c/x.tif", "adlfs"),
                                          ("abfs://c/x.tif", "adlfs"), ("https://h/x.tif", "aiohttp")])
def test_each_scheme_has_its_package(url, package):
    assert storage.backend(url).package == package


def test_local_paths_need_no_backend():
    assert storage.backend("/data/x.tif") is None and storage.backend("file:///data/x.tif") is None


def test_a_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "adlfs", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'rayvit\[azure\]'") as err:
        storage.filesystem("az://container/x.tif")
    assert isinstance(err.value, ImportError) and "AZURE_STORAGE_CONNECTION_STRING" in str(err.value)


def test_an_unknown_scheme_lists_the_ones_read():
    with pytest.raises(InputError, match=r"does not read ftp:// URLs.*gs://"):
        storage.backend("ftp://host/x.tif")


@pytest.mark.parametrize("url, expected", [
    ("https://a.blob.core.windows.net/c/x.tif?sv=2024-01-01&sig=AbC%2Fd&se=1",
     "https://a.blob.core.windows.net/c/x.tif?sv=2024-01-01&sig=***&se=1"),
    ("https://h/x.tif?X-Amz-Credential=AKIA%2F1&X-Amz-Date=20261130&X-Amz-Signature=ff",
     "https://h/x.tif?X-Amz-Credential=***&X-Amz-Date=20261130&X-Amz-Signature=***"),
    ("https://user:pw@h/x.tif", "https://user:***@h/x.tif"),
    ("s3://bucket/x.tif", "s3://bucket/x.tif"),
    ("/local/x.tif", "/local/x.tif")])
def test_redact_hides_passwords_and_signatures_only(url, expected):
    assert storage.redact(url) == expected


def test_the_raster_opener_reads_ahead_little_and_forwards_the_rest(tmp_path):
    from emulators import range_http_server

    (tmp_path / "f.bin").write_bytes(bytes(range(256)) * 4096)                 # 1 MiB
    with range_http_server(tmp_path) as (server, base):
        opener = storage.RasterOpener(storage.filesystem(base))
        with opener.open(f"{base}/f.bin") as fh:
            fh.seek(1000)
            assert fh.read(10) == bytes(range(232, 242))
        assert server.bytes_served == 10 + storage.READ_AHEAD                  # not fsspec's 5 MiB
        assert opener.size(f"{base}/f.bin") == 2**20                           # the filesystem's own
