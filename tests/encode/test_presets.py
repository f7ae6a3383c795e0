"""The preset registry and sensor tables (plain data)."""

import pytest

from rayvit.encode import presets
from rayvit.encode.presets import PRESETS, SENSORS, canonical


def test_the_presets_the_field_needs_are_registered():
    arch = {p.name: p.architecture for p in PRESETS.values()}
    for name in ("ssl4eo-s2-vit-s16-dino", "ssl4eo-s2-vit-s16-moco", "ssl4eo-s2-vit-s16-mae"):
        assert arch[name] == "timm:vit_small_patch16_224" and PRESETS[name].in_chans == 13
    assert PRESETS["ssl4eo-l-oli-sr-vit-s16-moco"].sensor == "landsat-oli-sr"
    assert arch["satlas-naip-swinb"] == arch["satlas-s2-swinb"] == "torchvision:swin_v2_b"
    assert PRESETS["dofa-vit-b16"].wavelengths and PRESETS["dofa-vit-b16"].extra == "torchgeo"
    assert arch["dinov3-sat-vit-l16"] == "timm:vit_large_patch16_dinov3.sat493m"


@pytest.mark.parametrize("preset", list(PRESETS.values()), ids=list(PRESETS))
def test_every_preset_is_complete(preset):
    assert all(b is not None and 0.4 < b.wavelength < 13 for b in preset.bands)
    assert preset.patch > 0 and preset.width > 0 and preset.source
    assert preset.converter in ("timm", "ssl4eo", "satlas", "dofa")
    for values in (preset.scale, preset.std) + ((preset.mean,) if preset.mean else ()):
        assert len(values) in (1, preset.in_chans)


def test_sentinel2_band_order_and_wavelengths():
    s2 = [b.name for b in SENSORS["sentinel-2"].bands]
    assert s2 == ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    assert [b.name for b in SENSORS["sentinel-2-l2a"].bands] == [n for n in s2 if n != "B10"]
    assert [b.name for b in SENSORS["landsat-oli-sr"].bands] == [f"B{i}" for i in range(1, 8)]
    assert SENSORS["sentinel-2"].band("red").name == "B04"
    assert SENSORS["sentinel-2"].band("b8a").wavelength == 0.865


def test_band_names_compare_loosely():
    assert canonical("B02") == canonical("b2") == canonical("SR_B2") == canonical(" B 02 ")
    assert canonical("B8A") == canonical("b08a") != canonical("B08")
    assert canonical("Red") == "red"


def test_unknown_names_get_close_presets():
    assert presets.close_names("satlas-s2")[0] == "satlas-s2-swinb"
    assert "ssl4eo-s2-vit-s16-dino" in presets.close_names("ssl4eo-s2-dino")
