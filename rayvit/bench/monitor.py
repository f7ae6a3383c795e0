"""Process monitoring for the benchmarks: CPU time per process role, peak memory."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time

import psutil


@contextlib.contextmanager
def workdir(path: str | None):
    """``path`` (created), or a temporary directory removed afterwards."""
    own = path is None
    path = path or tempfile.mkdtemp(prefix="rayvit-bench-")
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    finally:
        if own:
            shutil.rmtree(path, ignore_errors=True)


class ProcessMonitor:
    """Samples this process and all its child processes (Ray's raylet, workers, actors).

    Always: CPU time per process role (:meth:`cpu_by_role`), which costs ~2 ms a sweep. Ray
    reuses a worker process for read and write tasks, so each sweep's CPU delta goes to the
    role the process's title shows at that sweep; a worker seen idle had, since the last
    sweep, most likely finished a task of the last role it was seen with. With ``memory``: the peak RSS of this
    process and the peak summed USS of the tree. USS (memory unique to a process) rather
    than RSS: Ray's object store is shared memory that every reader maps, and RSS would
    count it once per process. Reading USS walks each process's page tables: ~50 ms a
    sweep of 10 Ray processes here, a quarter of a core at 0.2 s, so timed runs leave it off.
    """

    ROLES = ("device actors", "read tasks", "write tasks", "driver", "Ray services")

    def __init__(self, interval: float = 0.2, memory: bool = True):
        self.interval, self.memory, self.driver, self.tree = interval, memory, 0, 0
        self.tree_by_role: dict[str, tuple[int, int]] = {}  # at the peak: (processes, USS)
        self._cpu: dict[int, float] = {}
        self._before: set[int] = set()      # processes that existed when monitoring began
        self._by_role = dict.fromkeys(self.ROLES, 0.0)
        self._actor: set[int] = set()
        self._idle: dict[int, dict[str, float]] = {}  # CPU spent titled IDLE since last named, by role
        self._last_task: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def role(title: str) -> str:
        """A Ray worker process's role from its title (``ray::<what it runs now>``)."""
        if "DeviceActor" in title:
            return "device actors"
        if title.startswith("ray::read_block"):
            return "read tasks"
        if "write_block" in title or "_windows_task" in title:
            return "write tasks"
        return "Ray services"

    def _sweep(self, me: psutil.Process) -> None:
        own = 0
        uss: dict[str, list[int]] = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    cpu = t.user + t.system
                    if proc.pid == me.pid:
                        role = "driver"
                    else:
                        title = " ".join(proc.cmdline()[:1])
                        role = self.role(title)
                        idle = self._idle.pop(proc.pid, {}) if not title.startswith("ray::IDLE") else None
                        if role == "device actors" or proc.pid in self._actor:  # an actor stays one
                            if proc.pid not in self._actor:
                                # it imported torch and the model's library while still titled
                                # IDLE (Ray names an actor's process once its class is loaded)
                                for was, seconds in (idle or {}).items():
                                    self._by_role[was] -= seconds
                                    self._by_role["device actors"] += seconds
                            self._actor.add(proc.pid)
                            role = "device actors"
                        elif role in ("read tasks", "write tasks"):
                            self._last_task[proc.pid] = role
                        elif idle is None:
                            role = self._last_task.get(proc.pid, role)
                    if proc.pid in self._cpu:
                        self._by_role[role] += cpu - self._cpu[proc.pid]
                        if proc.pid != me.pid and title.startswith("ray::IDLE"):
                            spent = self._idle.setdefault(proc.pid, {})
                            spent[role] = spent.get(role, 0.0) + cpu - self._cpu[proc.pid]
                    self._cpu[proc.pid] = cpu
                    if self.memory:
                        if proc.pid == me.pid:
                            own = proc.memory_info().rss
                        uss.setdefault(role, []).append(proc.memory_full_info().uss)
            except psutil.Error:
                pass
        total = sum(map(sum, uss.values()))
        if total > self.tree:
            self.tree_by_role = {role: (len(v), sum(v)) for role, v in uss.items()}
        self.driver, self.tree = max(self.driver, own), max(self.tree, total)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            self._sweep(me)
            time.sleep(self.interval)

    @property
    def started(self) -> set[int]:
        """PIDs of the processes (Ray workers, actors) that started while monitoring: each new
        Ray worker imports Ray and rayvit, an actor also torch and the model's library."""
        return set(self._cpu) - self._before

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds spent while monitoring, per role (processes that started and ended
        between two sweeps are missed; ended ones count up to their last sample)."""
        return dict(self._by_role)

    def __enter__(self):
        self.machine_cpu_s = -machine_cpu_seconds()
        self._sweep(psutil.Process())
        self._before = set(self._cpu)
        self._by_role = dict.fromkeys(self.ROLES, 0.0)
        self.driver = self.tree = 0
        self.tree_by_role = {}
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sweep(psutil.Process())
        self.machine_cpu_s += machine_cpu_seconds()


def machine_cpu_seconds(stat: str = "/proc/stat") -> float:
    """CPU seconds the whole machine has spent busy since boot (every process and the kernel:
    user, nice, system, irq, softirq, steal; guest time is inside user), from the first line of
    ``/proc/stat`` (Linux); 0.0 where there is none. The difference over a run is what the run
    cost the machine, whatever the processes the monitor saw or missed."""
    try:
        with open(stat) as fh:
            fields = fh.readline().split()
    except OSError:
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_encoders_gone(timeout: float = 60.0) -> None:
    """Release this process's idle encoder actors (each timed run starts its own, as a
    ``rayvit encode`` command does), then wait until none of their processes is left among
    our children."""
    from ..encode.stages.pool import release_encoders

    release_encoders()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = []
        for proc in psutil.Process().children(recursive=True):
            try:
                names.append(" ".join(proc.cmdline()[:1]))
            except psutil.Error:
                pass
        if not any(ProcessMonitor.role(n) == "device actors" for n in names):
            return
        time.sleep(0.5)
