"""The benchmarks' process monitor, in process: which processes started while it watched, and the
whole machine's busy CPU time from /proc/stat."""

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


def test_machine_cpu_seconds_counts_busy_time_from_proc_stat(tmp_path):
    import os

    from rayvit.bench.monitor import machine_cpu_seconds

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice: idle and iowait are not busy
    stat.write_text("cpu  1000 20 300 90000 500 7 3 10 40 0\ncpu0 500 10 150 45000 250 3 1 5 20 0\n")
    assert machine_cpu_seconds(str(stat)) == (1000 + 20 + 300 + 7 + 3 + 10) / os.sysconf("SC_CLK_TCK")
    assert machine_cpu_seconds(str(tmp_path / "missing")) == 0.0
    assert machine_cpu_seconds() > 0                            # this machine's, where Linux has one
