"""Raster bands -> preset inputs, by name (pure functions)."""

import pytest

from rayvit import console
from rayvit.encode.bands import bind, sensor_names
from rayvit.encode.presets import PRESETS
from rayvit.errors import InputError

S2 = PRESETS["ssl4eo-s2-vit-s16-dino"]
SATLAS = PRESETS["satlas-s2-swinb"]
DOFA = PRESETS["dofa-vit-b16"]
ALL13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")


def test_named_bands_are_reordered_to_the_presets_order():
    names = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B11", "B12", "QA")     # file order
    b = bind(SATLAS, range(1, 11), names, "x.tif", explicit=False)
    assert b.bands == (3, 2, 1, 4, 5, 6, 7, 8, 9)                             # B04, B03, B02, ...: QA left out
    assert b.channels is None and b.fill is None
    rows = b.record(SATLAS)
    assert [(r["input"], r["band"], r["raster_band"]) for r in rows][:3] == [(0, "B04", 3), (1, "B03", 2), (2, "B02", 1)]


def test_a_missing_band_is_an_error_naming_it_and_the_rasters_bands():
    with pytest.raises(InputError) as e:
        bind(S2, (1, 2, 3, 4), ("B02", "B03", "B04", "B08"), "x.tif", explicit=True)
    assert "B01, B05, B06, B07, B8A, B09, B10, B11, B12" in str(e.value)
    assert "its bands: B02, B03, B04, B08" in str(e.value) and "--band-fill" in str(e.value)


@pytest.mark.parametrize("fill,expected", [("mean", 0.0), ("zero", 0.0)])
def test_band_fill_feeds_the_other_inputs(fill, expected):
    b = bind(S2, (1, 2, 3, 4), ("B02", "B03", "B04", "B08"), "x.tif", explicit=True, band_fill=fill)
    assert b.channels == (1, 2, 3, 7) and len(b.fill) == 13
    assert b.filled == ("B01", "B05", "B06", "B07", "B8A", "B09", "B10", "B11", "B12")
    assert all(v == expected for v in b.fill)     # SSL4EO: mean 0, so 0 reflectance is 0 too
    rows = b.record(S2, fill)
    assert rows[0] == {"input": 0, "band": "B01", "fill": fill}
    assert rows[1] == {"input": 1, "raster_band": 1, "raster_name": "B02", "band": "B02"}


def test_zero_fill_is_zero_reflectance_in_the_presets_units():
    dino = PRESETS["dinov3-sat-vit-l16"]
    b = bind(dino, (1, 2), ("red", "green"), "x.tif", explicit=True, band_fill="zero")
    assert b.channels == (0, 1)
    assert b.fill[2] == pytest.approx(-0.296 / 0.143)


def test_unnamed_bands_are_taken_in_order_only_when_the_count_matches(capsys):
    console._warned.clear()
    b = bind(S2, range(1, 14), (None,) * 13, "x.tif", explicit=False)
    assert b.bands == tuple(range(1, 14)) and b.names == ALL13
    assert "have no names" in capsys.readouterr().err
    with pytest.raises(InputError, match="has 11 bands .* without names, and preset"):
        bind(S2, range(1, 12), (None,) * 11, "x.tif", explicit=False)


def test_an_explicit_band_the_preset_does_not_take_is_an_error():
    with pytest.raises(InputError, match=r"band 5 of 'x.tif' \(QA\) is not an input"):
        bind(S2, (1, 2, 3, 4, 5), ("B02", "B03", "B04", "B08", "QA"), "x.tif", explicit=True, band_fill="zero")


def test_a_sensor_names_every_band_in_order():
    assert sensor_names("sentinel-2", 13, "x.tif") == ALL13
    with pytest.raises(InputError, match="has 11 bands, but sentinel-2 has 13"):
        sensor_names("sentinel-2", 11, "x.tif")


def test_dofa_takes_any_bands_with_their_wavelengths():
    b = bind(DOFA, (1, 2, 3), ("B04", "B03", "B8A"), "x.tif", explicit=False)
    assert b.wavelengths == (0.665, 0.560, 0.865)
    given = bind(DOFA, (1, 2), (None, None), "x.tif", explicit=False, wavelengths=(0.49, 0.842))
    assert given.wavelengths == (0.49, 0.842)
    with pytest.raises(InputError, match="gives 1 values for 2 bands"):
        bind(DOFA, (1, 2), (None, None), "x.tif", explicit=False, wavelengths=(0.49,))
    with pytest.raises(InputError, match="Give --wavelengths"):
        bind(DOFA, (1, 2), ("B04", "mystery"), "x.tif", explicit=False)
