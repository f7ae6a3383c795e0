"""Fault tolerance, with real processes: an encoder actor or a whole worker node killed
mid-run under a driver of its own; the output is byte-identical to a clean run (nothing
lost, nothing duplicated). (Killing the driver and resuming is tested in
test_cli.py::test_resume_after_a_kill_is_byte_identical.) A corrupt input fails by name or
is skipped."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import FAULT_ARGS, FAULT_BLOCKS, blocks_done, cut_into_four, run_cli, seeded_image

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]


def _start(path, out, *extra, env=None):
    exe = Path(sys.executable).with_name("rayvit")
    return subprocess.Popen([str(exe), "encode", path, "-o", str(out), *FAULT_ARGS, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_blocks(out, proc, n=8):
    deadline = time.monotonic() + 300
    while blocks_done(out) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None:
        raise AssertionError(f"the run ended before the fault (exit {proc.returncode}): {proc.stderr.read()[-2000:]}")
    assert blocks_done(out) < FAULT_BLOCKS, "the run ended before the fault"


def test_killing_an_encoder_actor_mid_run_loses_nothing(clean_run, tmp_path):
    path, clean = clean_run
    want = (clean / "features.tif").read_bytes()
    out = tmp_path / "o"
    proc = _start(path, out)
    _wait_blocks(out, proc)
    actors = [p for p in psutil.Process(proc.pid).children(recursive=True)
              if "DeviceActor" in " ".join(p.cmdline())]
    assert actors, "no encoder actor process found"
    actors[0].kill()
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert (out / "features.tif").read_bytes() == want


def test_killing_a_worker_node_mid_run_loses_nothing(clean_run, cluster, tmp_path):
    path, clean = clean_run
    want = (clean / "features.tif").read_bytes()
    out = tmp_path / "o"
    cluster["wait_idle"]()
    proc = _start(path, out, "--address", cluster["address"], "--actors", "2", env=cluster["env"])
    _wait_blocks(out, proc)
    cluster["kill_node"](1)               # the 1-CPU worker node
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        cluster["add_node"](1)            # the session's cluster has two nodes again
    assert proc.returncode == 0, stderr[-3000:]
    assert (out / "features.tif").read_bytes() == want


def test_a_corrupt_file_in_a_mosaic_fails_by_name_or_is_skipped(tmp_path):
    import json

    import numpy as np
    from conftest import read
    data = seeded_image((3, 90, 130), seed=4)
    parts = cut_into_four(tmp_path, data)
    args = ["--model", "rayvit_patchmean_p4", "--no-pretrained", "--size", "16", "--normalize", "none", "--quiet"]
    full = run_cli("encode", *parts, "-o", tmp_path / "full", *args)
    assert full.returncode == 0, full.stderr
    Path(parts[3]).write_bytes(b"II*\x00" + bytes(range(256)) * 4)          # part_11: corrupt
    failed = run_cli("encode", *parts, "-o", tmp_path / "fail", *args)
    assert failed.returncode == 2 and "part_11.tif" in failed.stderr and "--skip-bad-inputs" in failed.stderr
    assert not (tmp_path / "fail").exists()
    skipped = run_cli("encode", *parts, "-o", tmp_path / "skip", *args, "--skip-bad-inputs")
    assert skipped.returncode == 0, skipped.stderr
    assert "part_11.tif" in skipped.stderr
    sidecar = json.loads((tmp_path / "skip" / "features.json").read_text())
    assert [s["input"] for s in sidecar["skipped_inputs"]] == [parts[3]]
    a, b = read(tmp_path / "full" / "features.tif")[0], read(tmp_path / "skip" / "features.tif")[0]
    assert a.shape == b.shape
    np.testing.assert_array_equal(b[:, :9], a[:, :9])          # rows of the good files: unchanged
    assert np.isnan(b[:, 10:, 16:]).all() and not np.isnan(a[:, 10:, 16:]).any()   # its area: nodata
