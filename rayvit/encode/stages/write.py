"""The write stage: Ray Data tasks that turn the device stage's merged blocks into COGs.

Each task writes its block where the product lives (:class:`rayvit.io.cog.BlockWriter`) and
passes on only the block's small record; the driver appends records to the manifest and
never receives a feature array.
"""

from __future__ import annotations

import json
import time

import numpy as np

from ...grid import Tiling
from ...io.cog import BlockWriter


def write_blocks(batch: dict[str, np.ndarray], writer: BlockWriter, tiling: Tiling) -> dict[str, np.ndarray]:
    records, seconds = [], []
    for k, (by, bx) in enumerate(zip(batch["by"], batch["bx"])):
        t0 = time.perf_counter()
        records.append(writer.write(tiling.block(int(by), int(bx)), batch["features"][k], batch["valid"][k]))
        seconds.append(time.perf_counter() - t0)
    passed = {k: batch[k] for k in ("tiles", "node", "read_s", "device_s", "model_load_s")}
    return {"record": np.array([json.dumps(r) for r in records]), "write_s": np.array(seconds), **passed}
