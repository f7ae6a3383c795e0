"""What a run prints on stderr: progress, warnings the user can act on, and how loud Ray and
GDAL are.

- :class:`Progress`: a tqdm bar (done, rate, ETA) when stderr is a terminal; otherwise a
  plain line every :data:`LINE_EVERY_S` seconds, and one at the end of a step that took
  longer (logs stay readable; short steps print nothing).
- :func:`warn`: ``warning: ...`` once per distinct message and run.
- :func:`set_verbose`: ``--verbose`` shows Ray's and GDAL's own logs; by default a run
  prints only what the user can act on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from typing import TextIO

LINE_EVERY_S = 5.0
_verbose = False
_progress = True
_warned: set[str] = set()


def set_verbose(on: bool) -> None:
    """Show (or hide) Ray's and GDAL's logs; call before Ray starts."""
    global _verbose
    if on:
        os.environ["CPL_DEBUG"] = "ON"        # GDAL's debug messages, through rasterio's logger
    elif _verbose:
        os.environ.pop("CPL_DEBUG", None)     # set by the verbose call before this one
    _verbose = bool(on)
    level = logging.DEBUG if on else logging.WARNING
    for name in ("rasterio", "rasterio._env", "rasterio._base", "rasterio._io"):
        logging.getLogger(name).setLevel(level if on else logging.ERROR)
    if on and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)


def verbose() -> bool:
    return _verbose


def progress_on() -> bool:
    """Whether steps show progress (off inside ``progress_enabled(False)``: ``--quiet``)."""
    return _progress


@contextlib.contextmanager
def progress_enabled(on: bool):
    global _progress
    saved, _progress = _progress, bool(on)
    try:
        yield
    finally:
        _progress = saved


def reset_warnings() -> None:
    """Forget which warnings were printed: each CLI command warns afresh."""
    _warned.clear()


def warn(message: str, file: TextIO | None = None) -> None:
    """Print ``warning: message`` on stderr, once per distinct message in this process."""
    if message in _warned:
        return
    _warned.add(message)
    print(f"warning: {message}", file=file or sys.stderr, flush=True)


class Progress:
    """Progress of ``total`` units of one step: ``with Progress(n, "encode", "tile") as p:
    p.update(k)``. Disabled with ``enabled=False`` (``--quiet``)."""

    def __init__(self, total: int, label: str, unit: str = "block", enabled: bool = True,
                 file: TextIO | None = None):
        self.total, self.label, self.unit, self.enabled = total, label, unit, enabled
        self.file = file or sys.stderr
        self.done, self.start, self.last = 0, time.monotonic(), time.monotonic()
        self.bar = None
        if enabled and self.file.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=label, unit=unit, file=self.file, dynamic_ncols=True,
                            leave=True, smoothing=0.1)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(n)
            return
        now = time.monotonic()
        finished_long = self.done >= self.total and now - self.start >= LINE_EVERY_S
        if self.enabled and (now - self.last >= LINE_EVERY_S or finished_long):
            self.last = now
            print(self.line(now) + (f", {note}" if note else ""), file=self.file, flush=True)

    def line(self, now: float | None = None) -> str:
        """``label: done/total units (pct), rate units/s, eta N s``."""
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"eta {left:.0f} s" if left != float("inf") else "eta unknown"
        return (f"{self.label}: {self.done}/{self.total} {self.unit}s "
                f"({100 * self.done / max(self.total, 1):.0f}%), {rate:.1f} {self.unit}s/s, {eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# Native (C++) log lines of Ray that are not the user's to act on. An actor whose constructor
# arguments travel through the object store makes Ray's core worker log an error-level notice
# (ray-project/ray#53727; Ray Data's actor pools, which rayvit no longer uses, did it for every
# pool); no setting turns it off.
NOISE = (re.compile(rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the "
                    rb"object store and max_restarts > 0"),)


@contextlib.contextmanager
def native_stderr_filter(patterns=NOISE):
    """Drop lines matching ``patterns`` from what native code (and child processes) write to
    file descriptor 2. Python's ``sys.stderr`` keeps writing to the original stream directly,
    so progress bars still see a terminal and nothing of ours is delayed."""
    try:
        saved = os.dup(2)
        read, write = os.pipe()
    except OSError:
        yield
        return
    sys.stderr.flush()
    python_stderr = sys.stderr
    sys.stderr = open(os.dup(saved), "w", buffering=1, errors=python_stderr.errors or "strict")
    os.dup2(write, 2)
    os.close(write)

    def pump():
        pending = b""
        while chunk := os.read(read, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = [line + b"\n" for line in lines if not any(p.search(line) for p in patterns)]
            if kept:
                os.write(saved, b"".join(kept))
        if pending:
            os.write(saved, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)          # closes the pipe's last write end held by this process
        thread.join(timeout=1.0)   # children that still hold it keep the pump running
        sys.stderr.close()
        sys.stderr = python_stderr
