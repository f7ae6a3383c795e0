"""``rayvit bench storage`` / ``nodes``: the same encode two ways, in one run."""

from __future__ import annotations

import math
import os

from .monitor import workdir


def _encode_rate(args: list[str], env: dict | None = None) -> float:
    """End-to-end tiles/s of one ``rayvit encode`` run in a fresh process (from its summary)."""
    import re
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "rayvit")
    r = subprocess.run([exe, "encode", *args, "--quiet", "--overwrite"], capture_output=True, text=True, env=env)
    m = re.search(r"encoded (\d+)/\d+ tiles, .* in ([0-9.]+) s \(([0-9.]+) tiles/s\)", r.stdout)
    if r.returncode or not m:
        raise RuntimeError(f"bench encode failed: {r.stderr[-2000:]}")
    return float(m.group(3))


def bench_compare(what: str, tiles: int = 1024, size: int = 224, model: str = "vit_tiny_patch16_224",
                  s3_url: str | None = None, address: str | None = None, work: str | None = None) -> float:
    """Encode throughput of the same raster two ways, in one run: ``storage`` (``s3_url``
    upload vs local disk) or ``nodes`` (cluster at ``address`` vs embedded single node)."""
    from ..io import storage
    from ..landscape import make_sample_raster

    with workdir(work) as work:
        side = math.ceil(math.sqrt(tiles))
        raster = os.path.join(work, "bench_compare.tif")
        if not os.path.exists(raster):
            make_sample_raster(raster, side * size, side * size, bands=3, seed=1)
        common = ["--model", model, "--no-pretrained", "--size", str(size), "--batch-size", "16"]
        local = _encode_rate([raster, "-o", os.path.join(work, "local"), *common])
        if what == "storage":
            if not s3_url:
                raise ValueError("bench storage needs --s3-url s3://bucket/prefix")
            remote = storage.join(s3_url, "bench_compare.tif")
            storage.fs_for(remote).put_file(raster, remote)
            other = _encode_rate([remote, "-o", os.path.join(work, "s3"), *common])
            label = f"S3 ({remote}) / local disk"
        else:
            if not address:
                raise ValueError("bench nodes needs --address of a multi-node cluster")
            other = _encode_rate([raster, "-o", os.path.join(work, "nodes"), *common, "--address", address])
            label = f"cluster at {address} / embedded single node"
        print(f"bench: local {local:.2f} tiles/s, other {other:.2f} tiles/s; RATIO {label}: "
              f"{other / local:.3f}", flush=True)
        return other / local
