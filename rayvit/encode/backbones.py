"""Non-timm encoders behind timm's feature API, and input-band fill.

The device stage calls ``forward_intermediates(x, indices=[layer], norm=True,
output_fmt="NCHW", intermediates_only=True)`` and reads ``feature_info`` and
``pretrained_cfg``. These wrappers give torchvision's Swin V2 (SatlasPretrain) and TorchGeo's
DOFA that interface; the model code itself stays in those libraries.
"""

from __future__ import annotations

import torch
from torch import nn


class SwinStages(nn.Module):
    """torchvision Swin (V1/V2): one feature layer per stage (reduction 4, 8, 16, 32)."""

    def __init__(self, swin: nn.Module):
        super().__init__()
        self.swin = swin
        # features: [patch embed, stage 1, merge, stage 2, merge, stage 3, merge, stage 4]
        self.stage_ends = [i for i, m in enumerate(swin.features) if i % 2 == 1]
        width = swin.features[0][0].out_channels
        self.feature_info = [{"module": f"swin.features.{i}", "num_chs": width * 2 ** k,
                              "reduction": 4 * 2 ** k} for k, i in enumerate(self.stage_ends)]
        self.pretrained_cfg = {"input_size": (swin.features[0][0].in_channels, 256, 256)}

    def forward_intermediates(self, x, indices, norm=True, output_fmt="NCHW", intermediates_only=True):
        wanted = {self.stage_ends[i] for i in indices}
        out = []
        for i, block in enumerate(self.swin.features):
            x = block(x)
            if i in wanted:
                y = self.swin.norm(x) if norm and i == self.stage_ends[-1] else x
                out.append(y.permute(0, 3, 1, 2))                   # NHWC -> NCHW
            if i >= max(wanted):
                break
        return out


class DOFADense(nn.Module):
    """TorchGeo's DOFA as a dense encoder: patch tokens of a block, at the band wavelengths the
    run was built with; position embeddings resampled to the tile's patch grid."""

    def __init__(self, dofa: nn.Module, wavelengths: tuple[float, ...]):
        super().__init__()
        self.dofa = dofa
        self.register_buffer("waves", torch.tensor(wavelengths, dtype=torch.float32), persistent=False)
        p, d = dofa.patch_size, dofa.embed_dim
        self.feature_info = [{"module": f"dofa.blocks.{i}", "num_chs": d, "reduction": p}
                             for i in range(len(dofa.blocks))]
        self.pretrained_cfg = {"input_size": (len(wavelengths), dofa.img_size, dofa.img_size)}

    def forward_intermediates(self, x, indices, norm=True, output_fmt="NCHW", intermediates_only=True):
        from timm.layers import resample_abs_pos_embed

        d = self.dofa
        h, w = x.shape[-2] // d.patch_size, x.shape[-1] // d.patch_size
        tokens, _ = d.patch_embed(x, self.waves)
        pos = resample_abs_pos_embed(d.pos_embed, (h, w), num_prefix_tokens=1)
        tokens = torch.cat([(d.cls_token + pos[:, :1]).expand(len(tokens), -1, -1), tokens + pos[:, 1:]], 1)
        last = max(indices)
        out = []
        for i, block in enumerate(d.blocks[:last + 1]):
            tokens = block(tokens)
            if i in indices:
                y = tokens[:, 1:]
                if norm:   # the pretrained encoder has no final norm of patch tokens: standardise
                    y = nn.functional.layer_norm(y, y.shape[-1:])
                out.append(y.transpose(1, 2).reshape(len(y), -1, h, w))
        return out


class BandFill(nn.Module):
    """Feeds the raster's ``C`` bands into a model that takes ``M``: input band ``k`` goes to
    model channel ``channels[k]``; the other channels hold ``fill`` (normalised units)."""

    def __init__(self, model: nn.Module, channels: tuple[int, ...], fill: tuple[float, ...]):
        super().__init__()
        self.model = model
        self.register_buffer("index", torch.tensor(channels), persistent=False)
        self.register_buffer("fill", torch.tensor(fill, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.feature_info = model.feature_info
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    def forward_intermediates(self, x, indices, **kwargs):
        full = self.fill.to(x.dtype).expand(len(x), -1, *x.shape[-2:]).clone()
        full[:, self.index] = x
        return self.model.forward_intermediates(full, indices, **kwargs)
