"""Resolve a timm model, its weights and its patch geometry.

The feature grid comes from timm's feature API (``feature_info[layer]['reduction']`` and
``forward_intermediates``), never from guessing ``sqrt(tokens - 1)``: that guess breaks on
register tokens and on non-square tiles.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import timm
import torch

from ..errors import ModelError
from ..io.storage import sha256_file
from . import baselines  # noqa: F401  (registers the baseline encoders in timm)
from . import presets, weights
from .backbones import BandFill, DOFADense, SwinStages
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


def require_extra(preset: presets.Preset) -> None:
    """A preset whose model code lives in an optional library: a clear error without it."""
    if preset.extra:
        try:
            __import__(preset.extra)
        except ImportError:
            raise ModelError(
                f"preset {preset.name!r} needs the optional dependency {preset.extra!r}; install it "
                f"with `pip install 'rayvit[{preset.extra}]'` (or `pip install {preset.extra}`).") from None


def preset_architecture(preset: presets.Preset, in_chans: int, tile_size=(224, 224),
                        wavelengths: tuple[float, ...] | None = None) -> torch.nn.Module:
    """The preset's architecture with random weights, behind timm's feature API."""
    kind, arch = preset.architecture.split(":", 1)
    if kind == "timm":
        return timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans,
                                 img_size=tuple(tile_size))
    if kind == "torchvision":
        import torchvision

        swin = getattr(torchvision.models, arch)(weights=None)
        conv = swin.features[0][0]     # as SatlasPretrain (and TorchGeo): a patch embedding per band count
        swin.features[0][0] = torch.nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride)
        return SwinStages(swin)
    require_extra(preset)
    import torchgeo.models

    dofa = getattr(torchgeo.models, arch)()
    return DOFADense(dofa, tuple(wavelengths or (0.665, 0.56, 0.49))[:in_chans])


def inner_model(model: torch.nn.Module) -> torch.nn.Module:
    """The library's own module inside a wrapper: what a checkpoint's keys address."""
    return model.dofa if isinstance(model, DOFADense) else model.swin if isinstance(model, SwinStages) else model


def _meta_architecture(preset: presets.Preset, in_chans: int) -> torch.nn.Module:
    with torch.device("meta"):
        return inner_model(preset_architecture(preset, in_chans, wavelengths=(0.5,) * in_chans))


def load_preset_weights(model: torch.nn.Module, preset: presets.Preset, path: str) -> None:
    """Load a checkpoint of ``preset`` (any published layout) into its architecture; a file of
    another preset or architecture is an error that names both."""
    raw = weights.load_file(path)
    state = weights.convert(raw, preset.converter)
    inner = inner_model(model)
    problems = weights.fits(state, {k: v.shape for k, v in inner.state_dict().items()})
    if problems:
        others = [n for n in weights.identify(raw, _meta_architecture) if n != preset.name]
        what = (f"it is a checkpoint of preset {' / '.join(repr(n) for n in others)}" if others
                else f"{len(problems)} mismatches, e.g. {'; '.join(problems[:3])}")
        raise ModelError(f"weights file {path!r} does not fit preset {preset.name!r} "
                         f"({preset.architecture}): {what}. Pass that preset's weights, or the "
                         "matching --model.")
    if hasattr(inner, "pos_embed") and "pos_embed" in state:
        module = __import__(type(inner).__module__, fromlist=["checkpoint_filter_fn"])
        if hasattr(module, "checkpoint_filter_fn"):   # timm: resample position embeddings to the tile
            state = module.checkpoint_filter_fn(state, inner)
    inner.load_state_dict(state, strict=False)


def timm_hub_preset(spec: ModelSpec, preset: presets.Preset) -> torch.nn.Module:
    """A timm preset with its weights from the Hugging Face hub (an error naming the file)."""
    arch = preset.architecture.split(":", 1)[1]
    try:
        model = timm.create_model(arch, pretrained=True, num_classes=0, in_chans=spec.model_chans,
                                  img_size=tuple(spec.tile_size))
    except Exception as exc:
        hub = timm.models.get_pretrained_cfg(arch)
        raise ModelError(
            f"the weights of preset {preset.name!r} could not be fetched from the Hugging Face hub "
            f"({type(exc).__name__}); download model.safetensors from "
            f"https://huggingface.co/{getattr(hub, 'hf_hub_id', arch)} elsewhere and pass it with "
            "--weights FILE, or use --no-pretrained.") from None
    return model


def build_preset(spec: ModelSpec) -> tuple[torch.nn.Module, str | None]:
    """A preset's model with its weights (``--weights``, hub/library download, or seeded random)
    and band fill; returns the model and the weights file used."""
    preset = presets.PRESETS[spec.preset]
    require_extra(preset)
    path = spec.weights
    if path is None and spec.pretrained and preset.url is None:     # timm's hub
        model = timm_hub_preset(spec, preset)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = preset_architecture(preset, spec.model_chans, spec.tile_size, spec.wavelengths)
        if path is None and spec.pretrained:
            path = str(weights.fetch(preset))
        if path is not None:
            load_preset_weights(model, preset, path)
    if spec.fill is not None:
        model = BandFill(model, spec.channels, spec.fill)
    return model, path


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
    if spec.preset:
        return build_preset(spec)[0].eval()
    baselines.register_null(spec.name.split(".")[0])
    is_hub = spec.name.startswith(("hf-hub:", "hf_hub:"))
    if not is_hub and not timm.is_model(spec.name.split(".")[0]):
        close = timm.list_models(f"*{spec.name.split('.')[0].split('_')[0]}*")[:8]
        near = presets.close_names(spec.name)
        raise ModelError(
            f"unknown model {spec.name!r}: neither a rayvit preset (close: {', '.join(near) or 'none'}; "
            f"`rayvit models` lists them) nor a timm architecture (similar: {', '.join(close) or 'none'}; "
            "`python -c \"import timm; print(timm.list_models('vit*'))\"` lists them).")
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


def weights_file(spec: ModelSpec) -> str | None:
    """The weights file a run loads: ``--weights``, or a preset's downloaded file."""
    if spec.weights or not (spec.preset and spec.pretrained):
        return spec.weights
    preset = presets.PRESETS[spec.preset]
    return str(weights.cached_file(preset)) if preset.url and weights.cached_file(preset).is_file() else None


def plan_model(spec: ModelSpec) -> ModelInfo:
    """What a plan needs of the model: its geometry and preprocessing, and that its weights
    fit (every error of :func:`build_model`). It is built on the meta device, which holds
    shapes and no numbers: no random initialisation and no parameter memory (a ViT-L:
    8.4 s -> 0.4 s here). A checkpoint loaded into it is still checked shape by shape; the
    copy itself is a no-op, which torch warns about once per tensor."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*meta parameter in the current model, which is a no-op")
        return model_info(build_model(spec), spec)


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
        weights_sha256=sha256_file(weights_file(spec)) if weights_file(spec) else None,
    )


