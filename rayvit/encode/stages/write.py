"""The write stage: Ray Data tasks that turn the device stage's merged blocks into COGs.

Each task writes its block where the product lives (:class:`rayvit.io.cog.BlockWriter`) and
passes on only the block's small record; the driver appends records to the manifest and
never receives a feature array.
"""

from __future__ import annotations

import json

import numpy as np

from ...grid import Tiling
from ...io.cog import BlockWriter


def write_blocks(batch: dict[str, np.ndarray], writer: BlockWriter, tiling: Tiling) -> dict[str, np.ndarray]:
    records = [writer.write(tiling.block(int(by), int(bx)), batch["features"][k], batch["valid"][k])
               for k, (by, bx) in enumerate(zip(batch["by"], batch["bx"]))]
    return {"record": np.array([json.dumps(r) for r in records]), "tiles": batch["tiles"], "node": batch["node"]}
