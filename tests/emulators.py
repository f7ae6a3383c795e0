"""Real local emulators of the other object stores, as ``s3server`` is for S3: Azurite (Azure
Blob Storage, from the npm registry) and gcp-storage-emulator (Google Cloud Storage, PyPI),
plus a plain HTTP server that answers Range requests and counts the bytes it serves.

Each is bound to 127.0.0.1 on a free port, keeps its data in memory and is stopped at the end.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from s3server import free_ports

# Azurite's well-known development account (public, in Microsoft's documentation)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_HOME = Path(os.environ.get("RAYVIT_TEST_CACHE", Path.home() / ".cache" / "rayvit-test")) / "azurite"


def azurite_binary() -> str | None:
    """``azurite-blob``: on PATH, or installed once from the npm registry into the test cache."""
    found = shutil.which("azurite-blob")
    local = AZURITE_HOME / "node_modules" / ".bin" / "azurite-blob"
    if found or local.exists():
        return found or str(local)
    if not shutil.which("npm"):
        return None
    subprocess.run(["npm", "install", "--prefix", str(AZURITE_HOME), "--no-audit", "--no-fund", "azurite@3"],
                   check=True, capture_output=True, timeout=600)
    return str(local)


def _wait(proc: subprocess.Popen, ready, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode})")
        try:
            if ready():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer in {timeout} s")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:      # an HTTP answer, even an error, means it is up
        pass
    return True


@contextmanager
def azurite(workdir: Path):
    """Azurite's blob service; yields ``{"env": ..., "fs": adlfs filesystem, "key": ...}``."""
    exe = azurite_binary()
    if exe is None:
        raise RuntimeError("Azurite is not installed and npm is not available to install it")
    (port,) = free_ports(1)
    proc = subprocess.Popen([exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                             "--silent", "--disableTelemetry", "--skipApiVersionCheck"], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(proc, lambda: _answers(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}?comp=list"), "Azurite")
        conn = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")
        import adlfs
        yield {"env": {"AZURE_STORAGE_CONNECTION_STRING": conn}, "key": AZURITE_KEY,
               "fs": adlfs.AzureBlobFileSystem(connection_string=conn, skip_instance_cache=True)}
    finally:
        _stop(proc)


@contextmanager
def gcs_emulator():
    """gcp-storage-emulator (in memory); yields ``{"env": ..., "fs": gcsfs filesystem}``."""
    (port,) = free_ports(1)
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    proc = subprocess.Popen([str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    try:
        _wait(proc, lambda: _answers(f"http://127.0.0.1:{port}/storage/v1/b"), "gcp-storage-emulator")
        os.environ.update(env)      # gcsfs reads both when it is imported and when a filesystem is made
        import gcsfs
        yield {"env": env, "fs": gcsfs.GCSFileSystem(endpoint_url=env["STORAGE_EMULATOR_HOST"], token="anon",
                                                     skip_instance_cache=True)}
    finally:
        _stop(proc)


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte-range requests (206), counting the body bytes sent."""

    def log_message(self, *args):
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        size = os.path.getsize(path)
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        fh = open(path, "rb")
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        fh.seek(start)
        self._remaining = end - start + 1
        return fh

    def copyfile(self, source, outputfile):
        data = source.read(self._remaining)
        self.server.bytes_served += len(data)
        outputfile.write(data)


@contextmanager
def range_http_server(root: Path):
    """Serve ``root`` on http://127.0.0.1:PORT; ``server.bytes_served`` counts body bytes."""
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.bytes_served = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
