"""The write stage: tasks that turn the device stage's merged blocks into COGs.

Each task writes its block where the product lives (:class:`rayvit.io.cog.BlockWriter`) and
returns only the block's small record, with what the stages measured; the driver appends
records to the manifest and never receives a feature array.
"""

from __future__ import annotations

import time

from ...grid import Tiling
from ...io.cog import BlockWriter


def write_block(writer: BlockWriter, tiling: Tiling, encoded: dict) -> dict:
    """Write one block the device stage encoded (:meth:`.device.DeviceStage.encode`); its
    record plus ``tiles``, ``node`` and the stage seconds."""
    t0 = time.perf_counter()
    record = writer.write(tiling.block(encoded["by"], encoded["bx"]), encoded["features"], encoded["valid"])
    measured = {key: encoded[key] for key in ("tiles", "node", "read_s", "device_s", "model_load_s")}
    return {**record, **measured, "write_s": time.perf_counter() - t0}
