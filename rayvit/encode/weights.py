"""Preset weights: safe loading, per-preset key converters, download and identification.

Files are read without executing pickled code (safetensors, or ``torch.load(weights_only=True)``).
Published checkpoints differ from the model's own key layout (training wrappers such as
``module.encoder_q.`` or ``teacher.backbone.``, SatlasPretrain's ``backbone.backbone.`` with its
FPN and heads); each preset names a converter that maps its layout to the model's.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelError
from .presets import PRESETS, Preset

DROP = {   # keys of training heads, decoders and wrappers that the encoder does not have
    "timm": ("head.", "fc_norm.", "decoder", "mask_token"),
    "ssl4eo": ("head.", "fc.", "fc_norm.", "decoder", "mask_token"),
    "satlas": ("fpn.", "upsample.", "heads.", "head."),
    "dofa": ("head.", "fc_norm.", "decoder", "mask_token"),
}
PREFIXES = ("module.", "model.", "teacher.", "student.", "encoder_q.", "encoder.", "backbone.")


def load_file(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or PyTorch file, without running pickled code."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file as load_safetensors

        return load_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # pickled code, truncated file, not a checkpoint
        raise ModelError(f"weights file {path!r} cannot be read as a state dict without executing "
                         f"code ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); save the "
                         "tensors alone, e.g. as .safetensors.") from None
    return unwrap(state)


def unwrap(state) -> dict[str, torch.Tensor]:
    """The tensor dict inside a training checkpoint (``state_dict``, ``model``, ``teacher``)."""
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in ("state_dict", "model", "teacher", "student") if k in state), None)
        if inner is None:
            break
        state = inner
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}


def convert(state: dict[str, torch.Tensor], converter: str) -> dict[str, torch.Tensor]:
    """Map a published checkpoint's keys to the preset model's (drops heads and decoders)."""
    out = {}
    for key, value in state.items():
        while key.startswith(PREFIXES):
            key = key.split(".", 1)[1]
        if not key.startswith(DROP[converter]):
            out[key] = value
    return out


def fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> list[str]:
    """What keeps ``state`` from loading into a model with ``expected`` shapes ([] = it fits).
    Heads and final pooled norms may be missing; nothing may be extra or differently shaped."""
    optional = ("head.", "fc_norm.")
    problems = [f"missing {k}" for k in expected if k not in state and not k.startswith(optional)]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [f"{k}: {tuple(v.shape)} vs {tuple(expected[k])}" for k, v in state.items()
                 if k in expected and v.shape != expected[k] and "pos_embed" not in k]
    return problems


def identify(state: dict[str, torch.Tensor], build_meta) -> list[str]:
    """Presets whose model the raw ``state`` fits (``build_meta(preset, in_chans)`` builds one
    on the meta device); used to name the preset a wrong weights file belongs to."""
    names = []
    for p in PRESETS.values():
        converted = convert(state, p.converter)
        embed = next((v for k, v in converted.items() if k.endswith(("patch_embed.proj.weight",
                                                                      "features.0.0.weight"))), None)
        chans = int(embed.shape[1]) if embed is not None and embed.ndim == 4 else p.in_chans
        try:
            model = build_meta(p, chans or 3)
        except Exception:   # an optional extra that is not installed
            continue
        if not fits(converted, {k: v.shape for k, v in model.state_dict().items()}):
            names.append(p.name)
    return names


def cached_file(preset: Preset) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / preset.url.rsplit("/", 1)[1]


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def fetch(preset: Preset) -> Path:
    """The preset's published weights file, from the torch hub cache or downloaded into it."""
    path = cached_file(preset)
    if path.is_file():
        return path
    error = "HF_HUB_OFFLINE is set" if offline() else None
    if error is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(preset.url, str(path), progress=False)
            return path
        except Exception as exc:   # no network, proxy, HTTP errors: many types
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    raise ModelError(
        f"the weights of preset {preset.name!r} could not be fetched ({error}). Download "
        f"{preset.url} on a machine with network access and pass it with --weights FILE "
        f"(or put it at {path}); --no-pretrained runs with random weights.")
