"""A command started in a process of its own at the start of the session, awaited by the
test that needs it: it runs beside the first tests (unit tests, mostly on one core of two)
instead of after them."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


class Background:
    """``Popen`` with its stdout and stderr in files under ``logs`` (a pipe that nobody reads
    until the end would fill up and stop the process), in a session of its own, so that
    :meth:`stop` ends it with every process it started."""

    def __init__(self, args, logs: Path, **popen):
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout, self.stderr = logs / "stdout", logs / "stderr"
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, text=True, start_new_session=True, **popen)

    def wait(self, timeout: float) -> subprocess.CompletedProcess:
        """Wait for the process (at most ``timeout`` s) and return what it gave."""
        code = self.proc.wait(timeout=timeout)
        return subprocess.CompletedProcess(self.proc.args, code, self.stdout.read_text(), self.stderr.read_text())

    def stop(self) -> None:
        """Kill the process and its children if it is still running."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
