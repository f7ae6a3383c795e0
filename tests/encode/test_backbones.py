"""Swin stages and DOFA behind timm's feature API; band fill (no Ray needed)."""

import pytest
import torch
import torchvision

from rayvit.encode.backbones import BandFill, SwinStages


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return SwinStages(torchvision.models.swin_v2_t(weights=None)).eval()


@pytest.mark.parametrize("layer,reduction,width", [(0, 4, 96), (1, 8, 192), (2, 16, 384), (3, 32, 768)])
def test_each_swin_stage_is_a_feature_grid_of_its_reduction(swin, layer, reduction, width):
    assert swin.feature_info[layer] == {"module": swin.feature_info[layer]["module"],
                                        "num_chs": width, "reduction": reduction}
    with torch.inference_mode():
        y = swin.forward_intermediates(torch.randn(2, 3, 64, 96), indices=[layer])[0]
    assert y.shape == (2, width, 64 // reduction, 96 // reduction)


def test_the_last_swin_stage_equals_torchvisions_own_features(swin):
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        ours = swin.forward_intermediates(x, indices=[3])[0]
        theirs = swin.swin.norm(swin.swin.features(x)).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


class Echo(torch.nn.Module):
    feature_info = [{"num_chs": 5, "reduction": 1}]

    def forward_intermediates(self, x, indices, **kwargs):
        return [x]


def test_band_fill_places_each_band_in_its_channel_and_fills_the_rest():
    model = BandFill(Echo(), channels=(1, 3), fill=(-1.0, 0.0, -2.0, 0.0, -3.0))
    x = torch.stack([torch.full((2, 2), 10.0), torch.full((2, 2), 20.0)])[None]
    y = model.forward_intermediates(x, indices=[0])[0]
    assert y[0, :, 0, 0].tolist() == [-1.0, 10.0, -2.0, 20.0, -3.0]
