"""Progress, warnings and the native stderr filter (in-process, no Ray)."""

import io
import os
import subprocess
import sys

from rayvit import console
from rayvit.console import Progress, native_stderr_filter, warn


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_a_bar_with_rate_and_eta_on_a_terminal():
    term = Terminal()
    with Progress(10, "encode", "tile", file=term) as p:
        p.update(3, "1/4 blocks")
    text = term.getvalue()
    assert "encode" in text and "3/10" in text and "tile/s" in text and "1/4 blocks" in text


def test_progress_prints_plain_lines_only_every_few_seconds_off_a_terminal(monkeypatch):
    log = io.StringIO()
    clock = iter([0.0, 0.0, 1.0, 6.0, 7.0])
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    p = Progress(4, "statistics", "window", file=log)   # start, last = 0 and 0
    p.update(1)          # t = 1: too soon
    p.update(1)          # t = 6: a line
    p.update(2)          # t = 7: finished, the step took >= 5 s: a last line
    assert log.getvalue().splitlines() == [
        "statistics: 2/4 windows (50%), 0.3 windows/s, eta 6 s",
        "statistics: 4/4 windows (100%), 0.6 windows/s, eta 0 s"]


def test_progress_is_silent_when_disabled_or_short():
    log, term = io.StringIO(), Terminal()
    with Progress(2, "x", file=term, enabled=False) as p:
        p.update(2)
    with Progress(2, "y", file=log) as q:
        q.update(2)                 # finished at once: a short step prints nothing
    assert term.getvalue() == "" and log.getvalue() == ""


def test_warn_prints_each_message_once():
    log = io.StringIO()
    warn("input 'a.tif' is warped", file=log)
    warn("input 'a.tif' is warped", file=log)
    warn("input 'b.tif' is warped", file=log)
    assert log.getvalue() == "warning: input 'a.tif' is warped\nwarning: input 'b.tif' is warped\n"


def test_native_stderr_filter_drops_rays_actor_notice_and_keeps_the_rest(capfd):
    notice = (b"[2026-11-25 03:15:38,717 E 30058 30058] core_worker.cc:2465: Actor with class name: "
              b"'MapWorker(MapBatches(DeviceStage))' and ID: 'ab' has constructor arguments in the object "
              b"store and max_restarts > 0. If the arguments in the object store go out of scope ...\n")
    with native_stderr_filter():
        os.write(2, b"first\n" + notice)
        subprocess.run([sys.executable, "-c", "import os; os.write(2, b'from a child\\n')"], check=True)
        print("python stderr", file=sys.stderr)
        os.write(2, b"last\n")
    err = capfd.readouterr().err
    assert "constructor arguments" not in err
    assert err.count("first\n") == 1 and "from a child\n" in err and "last\n" in err and "python stderr\n" in err


def test_verbose_shows_gdals_own_log(tmp_path):
    from conftest import seeded_image, write_raster
    path = write_raster(tmp_path / "a.tif", seeded_image((1, 8, 8)))
    code = ("import sys; from rayvit.console import set_verbose; set_verbose(sys.argv[2] == 'on'); "
            "import rasterio; rasterio.open(sys.argv[1]).read()")
    loud = subprocess.run([sys.executable, "-c", code, path, "on"], capture_output=True, text=True)
    quiet = subprocess.run([sys.executable, "-c", code, path, "off"], capture_output=True, text=True)
    assert loud.returncode == quiet.returncode == 0
    assert "GDAL" in loud.stderr or "GTiff" in loud.stderr, loud.stderr
    assert quiet.stderr == ""
