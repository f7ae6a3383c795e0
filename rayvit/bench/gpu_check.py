"""`python -m rayvit.bench.gpu_check`: the prepared GPU check, run in one call on a lent device machine.

For each model (default ViT-B/16 and ViT-L/16, 224 px tiles, bf16 on CUDA): the bare model's
``forward_intermediates`` on random tensors and the whole ``rayvit.encode`` of a generated
raster of at least ``tiles`` tiles, the same tiles, with the ratio of the two
(:func:`.encode.bench_encode`), while ``nvidia-smi`` records the GPU's utilisation and memory
every 0.5 s. Writes ``device-check.json`` (machine, per model: rates, ratio, CPU seconds by
role, GPU utilisation while its encode ran) into ``out``. Without a GPU (the rehearsal on a
CPU machine) the same code runs, and the GPU parts say they were skipped.

``device/check.sh`` installs what the machine lacks from carried wheels and runs this; see
``device/README.md``.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time

MODELS = ("vit_base_patch16_224", "vit_large_patch16_224")


class GpuSampler:
    """``nvidia-smi`` polling into ``path`` (CSV) while it is open; nothing without one."""

    def __init__(self, path: str, interval_ms: int = 500):
        self.path, self.interval_ms, self.proc = path, interval_ms, None

    def __enter__(self) -> "GpuSampler":
        if shutil.which("nvidia-smi"):
            self.fh = open(self.path, "w")
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used,power.draw",
                 "--format=csv,noheader,nounits", f"-lms={self.interval_ms}"], stdout=self.fh,
                stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.fh.close()

    def between(self, t0: float, t1: float) -> dict:
        """Utilisation summary of the samples taken between wall-clock times ``t0`` and ``t1``."""
        if not self.proc:
            return {"skipped": "no nvidia-smi on this machine (a rehearsal without a GPU)"}
        self.fh.flush()
        return utilisation(self.path, t0, t1)


def utilisation(path: str, t0: float, t1: float) -> dict:
    """Mean and median GPU utilisation (%) and peak memory (MiB) of the ``nvidia-smi`` CSV rows
    (``timestamp, utilization.gpu, memory.used, ...``, no units) taken between ``t0`` and ``t1``."""
    from datetime import datetime

    rows = []
    with open(path) as fh:
        for row in csv.reader(fh):
            try:
                t = datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
                util, mem = float(row[1]), float(row[2])
            except (ValueError, IndexError):
                continue
            if t0 <= t <= t1:
                rows.append((util, mem))
    if not rows:
        return {"samples": 0}
    util = sorted(u for u, _ in rows)
    return {"samples": len(rows), "mean_util_pct": sum(util) / len(util), "median_util_pct": util[len(util) // 2],
            "max_memory_mib": max(m for _, m in rows)}


def machine() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def device_check(out: str, models=MODELS, tiles: int = 4096, size: int = 224, bands: int = 3,
                 work: str | None = None) -> dict:
    from .encode import bench_encode

    os.makedirs(out, exist_ok=True)
    result = {"machine": machine(), "tiles": tiles, "size": size, "bands": bands, "models": {}}
    print(f"device check: {json.dumps(result['machine'])}", flush=True)
    with GpuSampler(os.path.join(out, "nvidia-smi.csv")) as gpu:
        for model in models:
            t0 = time.time()
            row = bench_encode(model, tiles, size, bands, scale_area=0, work=work)
            row["gpu"] = gpu.between(t0, time.time())
            result["models"][model] = row
            run = row["runs"][0]
            print(f"device check: {model}: bare {row['bare_tiles_per_s']:.1f} tiles/s, encode "
                  f"{run['tiles_per_s']:.1f} tiles/s end to end (x{run['ratio']:.3f}; after start-up "
                  f"x{run['steady_ratio']:.3f}); GPU {json.dumps(row['gpu'])}", flush=True)
            with open(os.path.join(out, "device-check.json"), "w") as fh:    # after each model: a
                json.dump(result, fh, indent=1, default=str)                  # cut-off run keeps the first
    return result


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m rayvit.bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "device-out"), help="where the JSON goes (default $OUT)")
    p.add_argument("--models", default=",".join(MODELS), help="timm models, comma-separated")
    p.add_argument("--tiles", type=int, default=4096, help="tiles per encode (default 4096)")
    p.add_argument("--workdir", help="where the generated rasters go (default: a temporary folder)")
    args = p.parse_args(argv)
    device_check(args.out, tuple(m for m in args.models.split(",") if m), args.tiles, work=args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
