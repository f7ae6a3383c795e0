"""Deterministic baseline "encoders" registered in timm's model registry.

``rayvit_patchmean_p{N}`` averages each N x N patch of the (normalised) input: its
features are the raster itself, aggregated onto the feature grid. It answers timm's
feature API (``feature_info``, ``forward_intermediates``), so it runs through exactly the
same tiling, Ray stages, merge and writing code as a ViT. That makes the whole pipeline
checkable against numpy (tests), and it is a useful tool in its own right: a mosaic
resampled onto the grid of a ViT with patch size N.

``rayvit_patchpos_p{N}`` adds two features: each patch's row and column *inside its
tile*. Overlapping tiles then disagree in a known way, which shows (and lets tests check
exactly) which tile each output pixel came from under every ``--merge`` method.

``rayvit_null_d{D}_p{P}`` returns ``D`` features per ``P x P`` patch at near-zero compute:
each patch's first input value plus the feature index. It is deterministic and as wide as
a real ViT, so ``rayvit bench pipeline`` measures what the pipeline costs around a model.
Any ``D`` and ``P`` work (:func:`register_null`, called by the model factory for such names).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from timm.models import register_model
from timm.models._registry import is_model


class PatchMean(torch.nn.Module):
    def __init__(self, patch: int, in_chans: int = 3, positions: bool = False, **_: object):
        super().__init__()
        self.patch, self.positions = patch, positions
        self.num_features = in_chans + (2 if positions else 0)
        self.feature_info = [{"num_chs": self.num_features, "reduction": patch, "module": "pool"}]
        self.pretrained_cfg = {"input_size": (in_chans, 16 * patch, 16 * patch),
                               "mean": (0.0,) * in_chans, "std": (1.0,) * in_chans}

    def forward(self, x):
        out = F.avg_pool2d(x, self.patch)
        if self.positions:
            b, _, h, w = out.shape
            rows = torch.arange(h, dtype=out.dtype, device=out.device).view(1, 1, h, 1).expand(b, 1, h, w)
            cols = torch.arange(w, dtype=out.dtype, device=out.device).view(1, 1, 1, w).expand(b, 1, h, w)
            out = torch.cat([out, rows, cols], dim=1)
        return out

    def forward_intermediates(self, x, indices=None, norm=False, output_fmt="NCHW",
                              intermediates_only=True, **_):
        return [self.forward(x)]


def _factory(kind: str, patch: int):
    def create(pretrained: bool = False, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay",
                                                                "num_classes", "img_size")}
        return PatchMean(patch, positions=kind == "patchpos", **kwargs)
    create.__name__ = f"rayvit_{kind}_p{patch}"
    create.__doc__ = f"Mean of each {patch}x{patch} patch{' + position in tile' if kind == 'patchpos' else ''}."
    return register_model(create)


for _kind in ("patchmean", "patchpos"):
    for _p in (2, 4, 8, 14, 16):
        _factory(_kind, _p)


class Null(torch.nn.Module):
    def __init__(self, width: int, patch: int, in_chans: int = 3, **_: object):
        super().__init__()
        self.patch, self.num_features = patch, width
        self.feature_info = [{"num_chs": width, "reduction": patch, "module": "null"}]
        self.pretrained_cfg = {"input_size": (in_chans, 16 * patch, 16 * patch),
                               "mean": (0.0,) * in_chans, "std": (1.0,) * in_chans}
        self.register_buffer("index", torch.arange(width, dtype=torch.float32).view(1, width, 1, 1))

    def forward(self, x):
        return x[:, :1, ::self.patch, ::self.patch] + self.index

    def forward_intermediates(self, x, indices=None, norm=False, output_fmt="NCHW",
                              intermediates_only=True, **_):
        return [self.forward(x)]


NULL_NAME = re.compile(r"rayvit_null_d(\d+)_p(\d+)$")


def register_null(name: str) -> bool:
    """Register ``rayvit_null_d{D}_p{P}`` in timm if ``name`` is one; True if it is."""
    m = NULL_NAME.match(name)
    if not m:
        return False
    if not is_model(name):
        width, patch = int(m.group(1)), int(m.group(2))

        def create(pretrained: bool = False, in_chans: int = 3, **_):
            return Null(width, patch, in_chans)
        create.__name__ = name
        create.__doc__ = f"{width} features per {patch}x{patch} patch at near-zero compute (pipeline benchmark)."
        register_model(create)
    return True


for _d in (384, 768):
    register_null(f"rayvit_null_d{_d}_p16")
