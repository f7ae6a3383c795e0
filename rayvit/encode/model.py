"""Resolve a timm model, its weights and its patch geometry.

The feature grid comes from timm's feature API (``feature_info[layer]['reduction']`` and
``forward_intermediates``), never from guessing ``sqrt(tokens - 1)``: that guess breaks on
register tokens and on non-square tiles.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from ..errors import ModelError
from ..io.storage import sha256_file
from . import baselines  # noqa: F401  (registers the baseline encoders in timm)
from .spec import ModelInfo, ModelSpec


def _create(spec: ModelSpec, pretrained: bool) -> torch.nn.Module:
    kwargs: dict = {"num_classes": 0, "in_chans": spec.in_chans}
    if spec.weights:
        kwargs["pretrained_cfg_overlay"] = {"file": str(spec.weights)}
    try:
        if spec.resize == "none":
            # ViT-family models take the tile size at creation (position embeddings are
            # resampled once); fully convolutional models accept any size anyway.
            kwargs["img_size"] = tuple(spec.tile_size)
        return timm.create_model(spec.name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise ModelError(f"model {spec.name!r} cannot be built: {exc}") from exc
        kwargs.pop("img_size")
        return timm.create_model(spec.name, pretrained=pretrained, **kwargs)


def build_model(spec: ModelSpec) -> torch.nn.Module:
    """Build the model described by ``spec``, with weights, in eval mode.

    Errors name the model or the weights file and the fix (unknown name, hub unreachable,
    weights whose shapes do not fit).
    """
    if spec.weights is not None and not Path(spec.weights).is_file():
        raise ModelError(f"weights file {spec.weights!r} does not exist; check --weights.")
    if spec.weights is not None and not str(spec.weights).endswith(
            (".safetensors", ".pth", ".pt", ".bin", ".ckpt")):
        raise ModelError(
            f"weights file {spec.weights!r} is neither .safetensors nor a PyTorch .pth/.pt/.bin "
            "state dict; convert it to .safetensors.")
    baselines.register_null(spec.name.split(".")[0])
    is_hub = spec.name.startswith(("hf-hub:", "hf_hub:"))
    if not is_hub and not timm.is_model(spec.name.split(".")[0]):
        close = timm.list_models(f"*{spec.name.split('.')[0].split('_')[0]}*")[:8]
        raise ModelError(
            f"unknown model {spec.name!r}: timm has no such architecture. "
            f"Similar names: {', '.join(close) or 'none'}; list them with "
            "`python -c \"import timm; print(timm.list_models('vit*'))\"`.")
    pretrained = spec.pretrained or spec.weights is not None
    try:
        # Random initialisation is seeded: every actor (and every run) of a --no-pretrained
        # model then holds the same weights, so outputs do not depend on the actor count.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = _create(spec, pretrained)
    except ModelError:
        raise
    except RuntimeError as exc:
        if spec.weights and ("size mismatch" in str(exc) or "Missing key" in str(exc)
                             or "Unexpected key" in str(exc)):
            raise ModelError(
                f"weights file {spec.weights!r} does not fit model {spec.name!r}: "
                f"{str(exc).splitlines()[0]} ... Use the weights of this exact architecture.") from exc
        raise ModelError(f"model {spec.name!r} could not be built: {exc}") from exc
    except Exception as exc:  # hub / network failures come in many types
        if pretrained and not spec.weights:
            raise ModelError(
                f"pretrained weights for {spec.name!r} could not be fetched ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). Without network access, download "
                "the weights elsewhere and pass them with --weights FILE (.safetensors or .pth), "
                "or use --no-pretrained for random weights.") from exc
        raise ModelError(f"model {spec.name!r} could not be built: {exc}") from exc
    return model.eval()


def model_info(model: torch.nn.Module, spec: ModelSpec) -> ModelInfo:
    """Read the patch geometry and preprocessing of a built model."""
    feature_info = getattr(model, "feature_info", None)
    if not feature_info or not hasattr(model, "forward_intermediates"):
        raise ModelError(
            f"model {spec.name!r} has no timm feature API (forward_intermediates/feature_info); "
            "use a ViT or another timm model that provides intermediate features.")
    n = len(feature_info)
    if not -n <= spec.layer < n:
        raise ModelError(f"--layer {spec.layer} is out of range for {spec.name!r}, which has "
                         f"{n} feature layers: use -{n}..{n - 1} (-1 = last).")
    layer = spec.layer % n
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    input_size = tuple(cfg.get("input_size", (3, 224, 224))[-2:])
    return ModelInfo(
        num_features=int(feature_info[layer]["num_chs"]),
        reduction=int(feature_info[layer]["reduction"]),
        model_input=input_size,
        layer=layer,
        n_layers=n,
        mean=tuple(float(v) for v in cfg.get("mean", ())),
        std=tuple(float(v) for v in cfg.get("std", ())),
        weights_sha256=sha256_file(spec.weights) if spec.weights else None,
    )


