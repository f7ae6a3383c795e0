"""The device stage: a block's raw input window in, the block's merged features out.

Runs in actors (one per GPU, or CPU actors) that outlive one encode (:mod:`.pool`).
Per block:

1. the window (native dtype) and its uint8 validity go to the device once (pinned memory,
   non-blocking copies on CUDA);
2. tiles are strided views of the window (``unfold``): nothing is copied per tile until a
   batch is gathered, converted to float32 and normalised on the device;
3. the model runs on the block's tiles that hold a valid pixel, in rank order, in batches of
   ``batch_size``; tiles without a valid pixel skip it;
4. each tile's features are merged into the block on the device (:mod:`rayvit.encode.merge`,
   the same maths as on numpy), in tile rank order;
5. the block is cast to the output dtype and copied back once.

A block's batches depend only on the block (its tiles and their validity), never on which
actor, node or order it ran in, so outputs are bit-identical across actor counts, nodes,
block order and resume. (The batch size and block size are part of the run's fingerprint:
they change torch's matmul blocking, hence the last bits of ViT features.)
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from ...grid import BlockTask
from ..merge import Contribution, get_merger
from ..model import build_model, model_info
from ..spec import ModelInfo, ModelSpec
from .pool import DeviceConfig

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# unsigned types torch only copies and converts ("barebones" dtypes): moved and indexed as their
# signed twin (same bytes), viewed as unsigned again to convert. Widening the twin to a larger
# signed type and masking instead cost 10x the conversion on CPU (14 vs 1.3 ms per batch of 16
# 4-band 224-px tiles).
_UNSIGNED = {np.dtype("uint16"): (torch.int16, torch.uint16), np.dtype("uint32"): (torch.int32, torch.uint32)}


def autocast(device: str, precision: str):
    """The autocast context of ``precision`` on ``device`` (none for fp32)."""
    dtype = TORCH_DTYPES[precision]
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def to_device(array: np.ndarray, device: str) -> torch.Tensor:
    """A host array on ``device``: through pinned memory with a non-blocking copy on CUDA.
    Unsigned 16/32-bit pixels travel as their signed twin (same bytes): torch indexes those
    on every device; :func:`to_float` converts the gathered tiles only."""
    twin = _UNSIGNED.get(array.dtype)
    if twin:
        array = array.view(np.dtype(str(twin[0]).replace("torch.", "")))
    with warnings.catch_warnings():  # arrays from Ray's object store are read-only; never written
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(array)
    if device.startswith("cuda"):
        t = t.pin_memory().to(device, non_blocking=True)
    return t


def to_float(x: torch.Tensor, native: np.dtype) -> torch.Tensor:
    """Pixels moved by :func:`to_device` as a new float32 tensor, with their native (unsigned)
    values."""
    twin = _UNSIGNED.get(np.dtype(native))
    if twin:
        x = x.view(twin[1])
    return x.to(torch.float32, copy=True)


def encode_tiles(model: torch.nn.Module, info: ModelInfo, spec: ModelSpec, x: torch.Tensor,
                 valid: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 precision: str = "fp32", native: np.dtype = np.dtype("float32")) -> torch.Tensor:
    """One model call: ``(B, C, H, W)`` raw pixels (moved by :func:`to_device` from dtype
    ``native``) and ``(B, H, W)`` validity on the device -> ``(B, D, h, w)`` float32 features.
    Pixels are normalised ``(x - mean) / std`` and invalid ones set to 0 (the band mean);
    with ``spec.resize == 'model'`` tiles are resized (bilinear) to the model's input size,
    as IAMAP does."""
    x = to_float(x, native).sub_(mean).div_(std).mul_(valid.unsqueeze(1))   # in place: half the memory traffic
    if spec.resize == "model":
        x = F.interpolate(x, size=info.model_input, mode="bilinear", align_corners=False)
    with torch.inference_mode(), autocast(str(x.device), precision):
        feats = model.forward_intermediates(x, indices=[info.layer], norm=True, output_fmt="NCHW",
                                            intermediates_only=True)[0]
    return feats.float()


def feature_valid(valid: torch.Tensor, footprint: tuple[int, int]) -> torch.Tensor:
    """``(..., H, W)`` input validity -> ``(..., H/fy, W/fx)``: a feature pixel is valid if any
    input pixel under it is."""
    *lead, h, w = valid.shape
    fy, fx = footprint
    return valid.reshape(*lead, h // fy, fy, w // fx, fx).any(dim=-1).any(dim=-2)


def encode_block(model: torch.nn.Module, info: ModelInfo, cfg: DeviceConfig, task: BlockTask,
                 pixels: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Encode and merge one block task from its window: ``(features (D, rows, cols) in the
    output dtype, valid (rows, cols) uint8, tiles that ran through the model)``."""
    t, device, b = cfg.tiling, cfg.device, task.block
    x, ok = to_device(pixels, device), to_device(valid, device).bool()
    sy, sx, ty, tx = t.y.size, t.x.size, t.y.stride, t.x.stride
    tiles = x.unfold(1, sy, ty).unfold(2, sx, tx)                      # (C, ny, nx, sy, sx) views
    tiles_ok = ok.unfold(0, sy, ty).unfold(1, sx, tx)                  # (ny, nx, sy, sx)
    fy, fx = t.y.footprint, t.x.footprint
    fvalid = feature_valid(ok, (fy, fx))                               # window feature grid
    tfy, tfx = t.tile_feature_shape
    tiles_fvalid = fvalid.unfold(0, tfy, t.y.stride_features).unfold(1, tfx, t.x.stride_features)
    todo = torch.nonzero(tiles_fvalid.flatten(2).any(dim=2)).tolist()  # row-major = rank order
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    # float16 output: copy merges round each kept value once, straight into a float16 block
    # (the bits of rounding the float32 block; no second pass over the block to cast it)
    out_dtype = torch.float16 if cfg.dtype == "float16" else torch.float32
    merger = get_merger(cfg.merge)((info.num_features, b.rows, b.cols), fvalid.new_zeros(1, dtype=out_dtype))
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start:start + cfg.batch_size]
        iy = torch.tensor([i for i, _ in batch], device=device)
        ix = torch.tensor([j for _, j in batch], device=device)
        feats = encode_tiles(model, info, cfg.spec, tiles[:, iy, ix].transpose(0, 1), tiles_ok[iy, ix],
                             mean, std, cfg.precision, pixels.dtype)
        if feats.shape[-2:] != (tfy, tfx):
            raise InputError(f"model {cfg.spec.name!r} returned a {feats.shape[-2]}x{feats.shape[-1]} "
                             f"feature grid for {sy}x{sx} tiles; expected {tfy}x{tfx}.")
        for k, (i, j) in enumerate(batch):
            gy, gx = task.tile_rows[i], task.tile_cols[j]
            r0, r1, c0, c1 = t.tile_span(gy, gx)
            y0, y1 = max(r0, b.row), min(r1, b.row + b.rows)
            x0, x1 = max(c0, b.col), min(c1, b.col + b.cols)
            oy, ox = t.y.feature_offset(gy), t.x.feature_offset(gx)
            merger.add(Contribution(t.tile_index(gy, gx), y0 - b.row, x0 - b.col,
                                    feats[k, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox],
                                    tiles_fvalid[i, j, y0 - oy:y1 - oy, x0 - ox:x1 - ox],
                                    (y0 - oy, x0 - ox), (tfy, tfx)))
    out, out_valid = merger.result()
    out = out.to(out_dtype)
    return out.cpu().numpy(), out_valid.to(torch.uint8).cpu().numpy(), len(todo)


class DeviceStage:
    """The device actor: encodes blocks with the model its calls name.

    It keeps the last model it loaded, so an actor that outlives one encode (see
    :class:`.pool.DevicePool`) starts the next encode of the same model at once; a different model
    (or weights file) replaces it.
    """

    def __init__(self, threads: int | None = None):
        import ray

        self.node = ray.get_runtime_context().get_node_id()
        if threads:
            torch.set_num_threads(threads)
        self.key, self.model, self.info = None, None, None

    def load(self, config: DeviceConfig) -> float:
        """Hold ``config``'s model on its device; the seconds it took (0 if already held)."""
        key = (config.spec, config.weights_sha256, config.device)
        if key == self.key:
            return 0.0
        import ray

        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(
                f"Ray node {ray.util.get_node_ip_address()} advertises a GPU, but torch there cannot see "
                "one (CUDA driver, CUDA_VISIBLE_DEVICES, or a CPU-only torch build); fix that node's GPU "
                "setup, or run with --device cpu.")
        t0 = time.perf_counter()
        self.key, self.model = None, None     # one model at a time: free the last one first
        self.model = build_model(config.spec).to(config.device)
        self.info = model_info(self.model, config.spec)
        self.key = key
        return time.perf_counter() - t0

    def encode(self, config: DeviceConfig, by: int, bx: int, window: tuple) -> dict:
        """Block ``(by, bx)`` of ``config.tiling`` from its read window (``(pixels, valid,
        read seconds)``, :func:`.read.read_block`): its merged features (to the write task,
        never to the driver) and what was measured. Plain numpy and numbers, so that write
        workers unpickle it without importing torch."""
        load_s = self.load(config)
        t0 = time.perf_counter()
        t = config.tiling
        task = t.block_task(t.block(by, bx))
        pixels, valid, read_s = window
        features, fvalid, _ = encode_block(self.model, self.info, config, task, pixels, valid)
        return {"by": by, "bx": bx, "features": features, "valid": fvalid, "tiles": task.n_tiles,
                "node": self.node, "read_s": read_s, "device_s": time.perf_counter() - t0,
                "model_load_s": load_s}


def encode_array(model: torch.nn.Module, info: ModelInfo, spec: ModelSpec, pixels: np.ndarray,
                 valid: np.ndarray, mean: Sequence[float], std: Sequence[float], device: str = "cpu",
                 precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Encode whole tiles given as arrays (one model call): ``(B, C, H, W)`` pixels and
    ``(B, H, W)`` validity -> ``((B, D, h, w)`` float32 features, ``(B, h, w)`` feature
    validity). Tiles without a valid pixel skip the model (their features are 0)."""
    x, ok = to_device(pixels, device), to_device(valid.astype(np.uint8), device).bool()
    fvalid = feature_valid(ok, info.footprint(spec))
    todo = torch.nonzero(fvalid.flatten(1).any(dim=1)).flatten()
    b, (gh, gw) = len(pixels), fvalid.shape[-2:]
    out = torch.zeros((b, info.num_features, gh, gw), dtype=torch.float32, device=device)
    if len(todo):
        c = pixels.shape[1]
        m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=device).view(1, c, 1, 1)
        out[todo] = encode_tiles(model, info, spec, x[todo], ok[todo], m, s, precision, pixels.dtype)
    return out.cpu().numpy(), fvalid.cpu().numpy()


def forward_rate(spec: ModelSpec, batch_size: int, threads: int | None = None, seconds: float = 20.0,
                 device: str = "cpu", precision: str = "fp32") -> float:
    """Tiles/s of the bare model call the device stage makes (``forward_intermediates`` with
    the same batch, precision and threads), on random tensors already on ``device``, random
    weights, after a warm-up: what the pipeline is measured against."""
    import dataclasses
    import time

    if threads:
        torch.set_num_threads(threads)
    spec = dataclasses.replace(spec, pretrained=False, weights=None)
    model = build_model(spec).to(device)
    info = model_info(model, spec)
    shape = tuple(info.model_input) if spec.resize == "model" else tuple(spec.tile_size)
    x = torch.randn(batch_size, spec.in_chans, *shape, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def forward():
        return model.forward_intermediates(x, indices=[info.layer], norm=True, output_fmt="NCHW",
                                           intermediates_only=True)

    with torch.inference_mode(), autocast(device, precision):
        for _ in range(3):
            forward()
        sync()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            forward()
            n += batch_size
        sync()
    return n / (time.perf_counter() - t0)
