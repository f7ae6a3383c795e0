"""The prepared device check: nvidia-smi's samples summarised per run, and the whole check
rehearsed on this CPU machine (the GPU parts say they were skipped)."""

import json

import pytest

from rayvit.bench.gpu_check import device_check, utilisation


def test_utilisation_summarises_the_samples_taken_during_a_run(tmp_path):
    from datetime import datetime

    path = tmp_path / "smi.csv"
    path.write_text("2026/12/06 10:00:00.000, 10, 1000, 100.5\n"
                    "2026/12/06 10:00:00.500, 90, 3000, 300.1\n"
                    "2026/12/06 10:00:01.000, 70, 2000, 250.0\n"
                    "[N/A], [N/A], [N/A], [N/A]\n"
                    "2026/12/06 10:00:05.000, 0, 500, 60.0\n")
    t = datetime(2026, 12, 6, 10, 0, 0).timestamp()
    assert utilisation(str(path), t + 0.4, t + 1.1) == {"samples": 2, "mean_util_pct": 80.0,
                                                        "median_util_pct": 90.0, "max_memory_mib": 3000.0}
    assert utilisation(str(path), t + 10, t + 11) == {"samples": 0}


@pytest.mark.slow
def test_the_device_check_runs_on_a_cpu_machine_and_writes_its_json(tmp_path, ray_local):
    out = tmp_path / "out"
    result = device_check(str(out), models=("vit_tiny_patch16_224",), tiles=16, work=str(tmp_path / "work"))
    saved = json.loads((out / "device-check.json").read_text())
    row = saved["models"]["vit_tiny_patch16_224"]
    assert saved["machine"]["cuda"] is False and "skipped" in row["gpu"]
    assert row["runs"][0]["tiles"] >= 16 and row["bare_tiles_per_s"] > 0 and row["runs"][0]["ratio"] > 0
    assert result["models"].keys() == saved["models"].keys()
