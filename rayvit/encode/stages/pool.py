"""The device stage's actors, as the driver manages them (no torch here: see :class:`DeviceActor`).

:class:`DevicePool` keeps a process's device actors from one encode to the next; each actor
is a :class:`DeviceActor`, which imports the device stage (:mod:`.device`: torch, timm, the
model) in its own process. The driver never imports torch: a model's plan is kept
(:func:`rayvit.encode.plan.model_info`), and an encode's driver spent ~3.5 s importing torch
and timm for nothing else; importing torch after Ray's threads had started in the driver
also crashed it once in the test suite.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ...grid import Tiling
from ..spec import ModelSpec


@dataclass(frozen=True)
class DeviceConfig:
    """What every device actor needs: the model, the geometry, normalisation and output."""

    spec: ModelSpec
    tiling: Tiling
    mean: tuple[float, ...]
    std: tuple[float, ...]
    merge: str = "center"
    dtype: str = "float32"
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 16
    weights_sha256: str | None = None   # the weights file's identity: an actor holding another reloads


class DeviceActor:
    """A device actor (Ray actor class): the device stage (:class:`.device.DeviceStage`),
    imported in the actor's process only."""

    def __init__(self, threads: int | None = None):
        from .device import DeviceStage

        self.stage = DeviceStage(threads)

    def encode(self, config: DeviceConfig, by: int, bx: int, window: tuple) -> dict:
        return self.stage.encode(config, by, bx, window)


class DevicePool:
    """This process's device actors, kept from one encode to the next.

    Each actor process imports torch and timm (~3.5 CPU-s) and loads its model before its
    first block: paid once per process, not once per encode, by a job with several encode
    steps, an ``--by-date`` series, a notebook, or the test suite's in-process CLI calls.
    The actors hold their CPUs (and GPUs) while idle, so any other rayvit stage releases
    them first (:func:`rayvit.runtime.init_ray`), as does :func:`release_encoders`; they end
    with the process in any case. Actors are started as encodes need them, up to ``size``,
    with ``SPREAD`` scheduling (one per node while nodes are free); one that dies is dropped
    and its blocks go to the others (a replacement starts only when none is left, so a lost
    node's actor is not restarted onto the CPUs the reads need).
    """

    def __init__(self, key: tuple, size: int, cpus: float, gpus: float, threads: int | None):
        import ray

        self.key, self.size, self.actors = key, size, []
        self._options = dict(num_cpus=cpus, num_gpus=gpus, max_restarts=0, scheduling_strategy="SPREAD")
        self._class = ray.remote(DeviceActor)
        self._threads = threads

    def take(self, n: int) -> list:
        """At least one and at most ``size`` actors, starting new ones up to ``n``."""
        while len(self.actors) < max(1, min(n, self.size)):
            self.actors.append(self._class.options(**self._options).remote(self._threads))
        return list(self.actors)

    def drop(self, actor) -> None:
        """Forget (and end) an actor that died."""
        import ray

        if actor in self.actors:
            self.actors.remove(actor)
            with contextlib.suppress(Exception):
                ray.kill(actor)

    def release(self) -> None:
        for actor in list(self.actors):
            self.drop(actor)


_pool: DevicePool | None = None


def device_pool(size: int, cpus: float, gpus: float, threads: int | None) -> DevicePool:
    """This process's pool of ``size`` actors of that shape: the one already up if it has
    that shape and this Ray session, else a new one (the old one released)."""
    import ray

    from ...runtime import hold

    global _pool
    ctx = ray.get_runtime_context()
    key = (ctx.gcs_address, ctx.get_node_id(), ctx.get_job_id(), size, cpus, gpus, threads)
    if _pool is None or _pool.key != key:
        release_encoders()
        _pool = DevicePool(key, size, cpus, gpus, threads)
        hold("encoders", release_encoders)
    return _pool


def release_encoders() -> None:
    """End this process's idle device actors, freeing their CPUs and GPUs."""
    global _pool
    if _pool is not None:
        _pool.release()
        _pool = None
