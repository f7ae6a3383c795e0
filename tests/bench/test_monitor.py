"""The benchmarks' process monitor, in process: which processes started while it watched."""

import subprocess
import time

from rayvit.bench.monitor import ProcessMonitor


def test_started_holds_the_children_that_began_while_monitoring_and_only_those():
    older = subprocess.Popen(["sleep", "3"])
    try:
        with ProcessMonitor(interval=0.05, memory=False) as mon:
            newer = subprocess.Popen(["sleep", "1"])
            time.sleep(0.5)
        newer.wait()
        assert newer.pid in mon.started and older.pid not in mon.started
    finally:
        older.kill()
