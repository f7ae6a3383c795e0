"""The encoder: tiles in, patch-grid features out. Runs as a Ray Data actor pool callable."""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .model import build_model, model_info
from .spec import ModelInfo, ModelSpec

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when a GPU is visible, else cpu; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device} was asked for, but no CUDA GPU is visible to this "
                         "process; use --device cpu (or auto), or run on a node with a GPU.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InputError(f"unknown --device {device!r}; valid: auto, cpu, cuda, cuda:N.")
    return device


def autocast(device: str, precision: str):
    """The autocast context of ``precision`` on ``device`` (none for fp32)."""
    dtype = TORCH_DTYPES[precision]
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def feature_valid(valid: np.ndarray, footprint: tuple[int, int]) -> np.ndarray:
    """(B, H, W) input validity -> (B, H/fy, W/fx): a feature pixel is valid if any input is."""
    b, h, w = valid.shape
    fy, fx = footprint
    return valid.reshape(b, h // fy, fy, w // fx, fx).any(axis=(2, 4))


def encode_array(model: torch.nn.Module, info: ModelInfo, spec: ModelSpec, pixels: np.ndarray,
                 valid: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 device: str = "cpu", precision: str = "fp32",
                 model_batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch of tiles: ``(B, C, H, W)`` pixels -> ``(B, D, h, w)`` float32 features.

    Pixels are normalised ``(x - mean) / std``; invalid pixels are then set to 0 (the
    band mean). With ``spec.resize == 'model'`` tiles are resized (bilinear) to the
    model's input size, as IAMAP does. Tiles with no valid pixel skip the model.

    With ``model_batch``, the model always sees exactly that many tiles per call
    (partial batches are padded with zeros, larger ones split). torch's CPU matmul picks
    other kernels for small batches, which changes the last bits of the features; a
    constant call shape keeps each tile's features independent of how Ray Data happened
    to batch it, so outputs are identical across actor counts and block sizes.
    """
    footprint = info.footprint(spec)
    fvalid = feature_valid(valid, footprint)
    b = pixels.shape[0]
    gh, gw = pixels.shape[2] // footprint[0], pixels.shape[3] // footprint[1]
    out = np.zeros((b, info.num_features, gh, gw), dtype=np.float32)
    todo = np.nonzero(fvalid.reshape(b, -1).any(axis=1))[0]
    if todo.size == 0:
        return out, fvalid
    x = torch.from_numpy(np.ascontiguousarray(pixels[todo])).to(device=device, dtype=torch.float32)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    x = (x - m) / s
    x = x * torch.from_numpy(valid[todo]).to(device).unsqueeze(1)
    if spec.resize == "model":
        x = F.interpolate(x, size=info.model_input, mode="bilinear", align_corners=False)
    step = model_batch or len(x)
    chunks = []
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            n = len(chunk)
            if n < step:
                chunk = torch.cat([chunk, chunk.new_zeros((step - n, *chunk.shape[1:]))])
            feats = model.forward_intermediates(chunk, indices=[info.layer], norm=True,
                                                output_fmt="NCHW", intermediates_only=True)[0]
            chunks.append(feats[:n].float().cpu())
    feats = torch.cat(chunks).numpy()
    if feats.shape[-2:] != (gh, gw):
        raise InputError(f"model {spec.name!r} returned a {feats.shape[-2]}x{feats.shape[-1]} feature "
                         f"grid for {pixels.shape[2]}x{pixels.shape[3]} tiles; expected {gh}x{gw}.")
    out[todo] = feats
    return out, fvalid


class Encoder:
    """Ray Data callable class: loads the model once per actor, then encodes batches."""

    def __init__(self, spec: dict, mean: Sequence[float], std: Sequence[float],
                 device: str = "cpu", precision: str = "fp32", threads: int | None = None,
                 model_batch: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.spec = ModelSpec(**spec)
        self.device = resolve_device(device)
        self.model = build_model(self.spec).to(self.device)
        self.info = model_info(self.model, self.spec)
        self.mean, self.std, self.precision = tuple(mean), tuple(std), precision
        self.model_batch = model_batch
        import ray
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feats, fvalid = encode_array(self.model, self.info, self.spec, batch["pixels"],
                                     batch["valid"], self.mean, self.std, self.device,
                                     self.precision, self.model_batch)
        return {"iy": batch["iy"], "ix": batch["ix"], "features": feats, "fvalid": fvalid,
                "node": np.full(len(batch["iy"]), self.node)}
