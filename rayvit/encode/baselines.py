"""Deterministic baseline "encoders" registered in timm's model registry.

``rayvit_patchmean_p{N}`` averages each N x N patch of the (normalised) input: its
features are the raster itself, aggregated onto the feature grid. It answers timm's
feature API (``feature_info``, ``forward_intermediates``), so it runs through exactly the
same tiling, Ray Data, merge and writing code as a ViT. That makes the whole pipeline
checkable against numpy (tests), and it is a useful tool in its own right: a mosaic
resampled onto the grid of a ViT with patch size N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_model


class PatchMean(torch.nn.Module):
    def __init__(self, patch: int, in_chans: int = 3, **_: object):
        super().__init__()
        self.patch = patch
        self.num_features = in_chans
        self.feature_info = [{"num_chs": in_chans, "reduction": patch, "module": "pool"}]
        self.pretrained_cfg = {"input_size": (in_chans, 16 * patch, 16 * patch),
                               "mean": (0.0,) * in_chans, "std": (1.0,) * in_chans}

    def forward_intermediates(self, x, indices=None, norm=False, output_fmt="NCHW",
                              intermediates_only=True, **_):
        return [F.avg_pool2d(x, self.patch)]

    def forward(self, x):
        return F.avg_pool2d(x, self.patch)


def _factory(patch: int):
    def create(pretrained: bool = False, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay",
                                                                "num_classes", "img_size")}
        return PatchMean(patch, **kwargs)
    create.__name__ = f"rayvit_patchmean_p{patch}"
    create.__doc__ = f"Mean of each {patch}x{patch} patch (deterministic baseline encoder)."
    return register_model(create)


for _p in (2, 4, 8, 14, 16):
    _factory(_p)
