"""Connecting to Ray: embedded local Ray by default, an existing cluster with an address."""

from __future__ import annotations

import logging
import os

import ray


_joined: str | None = None      # the address this module's ray.init was given (Ray reports another form)
_held: dict = {}                # name -> release(): what this process keeps on the cluster between runs


def hold(name: str, release) -> None:
    """Note that this process keeps ``name`` (e.g. idle encoder actors) on the cluster
    between runs; :func:`init_ray` calls ``release()`` before any other kind of run."""
    _held[name] = release


def init_ray(address: str | None = None, keep: str | None = None) -> None:
    """Start (or join) Ray once per process; quiet unless :func:`rayvit.console.set_verbose`
    was called.

    ``address`` (or ``RAY_ADDRESS``; ``auto``: the cluster `ray start` started on this
    machine) joins an existing cluster; otherwise Ray starts embedded in this process, using
    this machine's CPUs and GPUs, even if a `ray start` cluster runs here (``ray.init()``
    alone would silently join that one).

    A process already connected to Ray (a notebook, a test session, an earlier command run
    in-process through ``rayvit.cli.main``) keeps that connection; an ``address`` that names
    another cluster is then an error rather than silently ignored.

    What this process holds on the cluster between runs (:func:`hold`) is released first,
    except ``keep``: an encode keeps the encoder actors of the last one; an analysis frees
    their CPUs for its tasks.
    """
    from .console import verbose

    global _joined
    for name in [n for n in _held if n != keep]:
        _held.pop(name)()
    if ray.is_initialized():
        connected = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", connected, _joined):
            from .errors import InputError
            raise InputError(f"this process is already connected to Ray at {connected}, so --address "
                             f"{address} cannot be joined: run the command in a process of its own, or "
                             "call ray.shutdown() first.")
    else:
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        kwargs = {"include_dashboard": False} if address == "local" else {}
        if address == "local":
            # a private, embedded cluster: no token to set up (Ray warns about it otherwise)
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            # Ray keeps about one idle worker per CPU and kills the rest after a second; the
            # device actors count, so on small machines every read and write task started a
            # new worker process (~1-2 CPU-s of imports each): 4096 tiles took 132 s, 91 s
            # with this. Clusters: set it on `ray start` (README, "Clusters").
            os.environ.setdefault("RAY_num_workers_soft_limit", str(max(8, 4 * (os.cpu_count() or 1))))
        ray.init(address=address, logging_level=logging.INFO if verbose() else logging.WARNING,
                 log_to_driver=True, **kwargs)
        _joined = address


def cluster_resources() -> tuple[float, float, float]:
    """``(total CPUs, total GPUs, CPUs of the largest node)`` of the connected cluster."""
    res = ray.cluster_resources()
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    return res.get("CPU", 1), res.get("GPU", 0), node_cpus
