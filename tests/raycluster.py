"""A real multi-process Ray cluster on this machine: `ray start` head (+ worker nodes), every
port chosen free, bound to 127.0.0.1, stopped (process groups killed) at the end."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from s3server import free_ports

BIN = Path(sys.executable).parent


def _node_args(ports):
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")
    args = [f"{n}={p}" for n, p in zip(names, ports)]
    return args + [f"--min-worker-port={ports[6]}", f"--max-worker-port={ports[6] + 40}"]


@contextmanager
def ray_cluster(workdir: Path, node_cpus=(1, 1), dashboard: bool = False, timeout: float = 180):
    """Yields ``{"address", "dashboard", "env"}``; ``env`` runs `ray`/`rayvit` against it."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_ports(2)
    procs, killed = [], set()
    log = open(workdir / "ray_cluster.log", "w")

    def start(args):
        procs.append(subprocess.Popen([str(BIN / "ray"), "start", "--block", "--disable-usage-stats",
                                       "--node-ip-address=127.0.0.1", *args],
                                      stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))

    def kill_node(i):
        """SIGKILL node ``i`` (0: head) and all its processes (raylet, workers)."""
        killed.add(i)
        children = _descendants(procs[i].pid)
        try:
            os.killpg(procs[i].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for child in children:
            try:
                child.kill()
            except Exception:
                pass

    try:
        head = ["--head", f"--port={gcs}", f"--num-cpus={node_cpus[0]}", "--dashboard-host=127.0.0.1",
                f"--include-dashboard={'true' if dashboard else 'false'}", f"--dashboard-port={dash}"]
        start(head + _node_args(_free_block((gcs, dash))))
        address = f"127.0.0.1:{gcs}"
        _wait_nodes(address, 1, env, timeout)
        for cpus in node_cpus[1:]:
            start([f"--address={address}", f"--num-cpus={cpus}"] + _node_args(_free_block((gcs, dash))))
        _wait_nodes(address, len(node_cpus), env, timeout)

        def add_node(cpus: int) -> int:
            """Start one more worker node; returns its index for ``kill_node``."""
            alive = len(procs) - len(killed)
            start([f"--address={address}", f"--num-cpus={cpus}"] + _node_args(_free_block((gcs, dash))))
            # the new node registered (a killed one may still be listed alive for a while)
            _wait_until(address, "len(ray.nodes())", len(procs), env, timeout, f"{len(procs)} nodes registered")
            _wait_nodes(address, alive + 1, env, timeout)
            return len(procs) - 1

        yield {"address": address, "dashboard": f"http://127.0.0.1:{dash}", "env": env, "kill_node": kill_node,
               "add_node": add_node, "wait_idle": lambda: _wait_idle(address, sum(node_cpus), env, timeout)}
    finally:
        # nothing to keep: no graceful drain (it waits 30 s per node for a GCS that is going away)
        for i in reversed(range(len(procs))):
            kill_node(i)
        for p in procs:
            p.wait(timeout=30)
        log.close()


def _descendants(pid):
    import psutil
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _free_block(exclude=()):
    """Six free ports for a node's components, and the start of a run of 41 free ports for
    its workers that holds none of them (Ray refuses overlapping port assignments)."""
    import socket

    ports = free_ports(6)
    for _ in range(200):
        base = free_ports(1)[0]
        run = range(base, base + 41)
        if base + 40 >= 65000 or any(p in run for p in (*ports, *exclude)):
            continue
        socks = []
        try:
            for p in run:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return ports + [base]
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of 41 free ports found for Ray workers")


def _wait_until(address, expr, at_least, env, timeout, what):
    """Poll ``expr`` (a Python expression over ``ray``) on the cluster until it is >= ``at_least``."""
    # the value on a line of its own, marked: Ray may print notices to stdout too ("raylet has
    # lagging heartbeats" on a busy machine)
    code = f"import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); print('value:', {expr})"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, env=env)
        values = [line.split(":", 1)[1] for line in r.stdout.splitlines() if line.startswith("value:")]
        if r.returncode == 0 and values and float(values[-1]) >= at_least:
            return
        time.sleep(1)
    raise RuntimeError(f"Ray cluster at {address}: {what} not reached in {timeout} s")


def _wait_idle(address, cpus, env, timeout):
    """Until every CPU is free again (a finished job's actors take a moment to go away)."""
    _wait_until(address, "ray.available_resources().get('CPU', 0)", cpus, env, timeout, f"{cpus} free CPUs")


def _wait_nodes(address, n, env, timeout):
    _wait_until(address, "sum(1 for x in ray.nodes() if x['Alive'])", n, env, timeout, f"{n} nodes")
