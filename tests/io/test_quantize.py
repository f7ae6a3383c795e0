"""Linear 8-bit quantisation: range, nodata code, and the half-step error bound."""

import numpy as np
import pytest

from rayvit.io import quantize


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_codes_fill_the_range_and_come_back_within_half_a_step(dtype):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 30, 40)) * np.arange(1, 6)[:, None, None] + 3
    valid = rng.random((30, 40)) > 0.2
    lo, hi = quantize.band_ranges(data, valid)
    scale, offset = quantize.params(lo, hi, dtype)
    codes = quantize.quantize(data, valid, scale, offset, dtype)
    qlo, qhi, empty = quantize.CODES[dtype]
    assert codes.dtype == np.dtype(dtype)
    assert (codes[:, ~valid] == empty).all()
    # the band minimum and maximum land on the end codes
    assert (codes[:, valid].min(axis=1) == qlo).all() and (codes[:, valid].max(axis=1) == qhi).all()
    back = quantize.dequantize(codes, scale, offset)
    err = np.abs(back - data)[:, valid]
    assert (err.max(axis=1) <= scale / 2 * (1 + 1e-5) + 1e-6).all()
    assert np.allclose(scale, (np.array(hi) - np.array(lo)) / 254)


def test_a_constant_band_comes_back_exactly():
    data = np.full((1, 4, 4), 7.25)
    valid = np.ones((4, 4), bool)
    scale, offset = quantize.params(*quantize.band_ranges(data, valid), "int8")
    assert scale[0] == 1.0
    assert (quantize.dequantize(quantize.quantize(data, valid, scale, offset, "int8"), scale, offset) == 7.25).all()


def test_uint8_validity_masks_are_masks_not_indices():
    """The encode write stage passes validity as uint8: it must select, not index, pixels."""
    data = np.arange(8.0).reshape(2, 2, 2)
    valid = np.array([[1, 0], [0, 1]], np.uint8)
    assert quantize.band_ranges(data, valid) == ([0.0, 4.0], [3.0, 7.0])


def test_stac_object_names_the_rule():
    obj = quantize.stac_object("int8", [0.5], [1.0])
    assert obj["quantized_dtype"] == "int8" and obj["original_dtype"] == "float32"
    assert obj["scale"] == [0.5] and obj["offset"] == [1.0] and "code * scale + offset" in obj["method"]


def test_per_pixel_codes_use_each_pixels_largest_magnitude_and_come_back_within_half_a_step():
    data = np.zeros((3, 1, 4), np.float32)
    data[:, 0, 0] = (127, -5, 3)             # scale 1: the codes are the values
    data[:, 0, 1] = (0.5, -1.0, 0.25)        # scale 1/127: -1 -> -127, 0.5 -> 63.5 -> 64 (to even), 0.25 -> 32
    data[:, 0, 3] = (9, 9, 9)                # not valid
    valid = np.array([[True, True, True, False]])
    codes, scales = quantize.per_pixel(data, valid)
    assert codes.dtype == np.int8 and scales.dtype == np.float32
    np.testing.assert_array_equal(codes[:, 0], [[127, 64, 0, 0], [-5, -127, 0, 0], [3, 32, 0, 0]])
    np.testing.assert_array_equal(scales[0, :3], np.float32([1, np.float32(1) / 127, 1]))   # all zero: scale 1
    assert np.isnan(scales[0, 3])
    values, ok = quantize.per_pixel_values(codes, scales)
    np.testing.assert_array_equal(ok, valid)
    np.testing.assert_array_equal(values[:, 0, 0], [127, -5, 3])
    assert np.isnan(values[:, 0, 3]).all() and (values[:, 0, 2] == 0).all()
    x = np.random.default_rng(0).normal(size=(64, 20, 30)).astype(np.float32) * np.float32(10) ** \
        np.random.default_rng(1).integers(-3, 3, size=(20, 30)).astype(np.float32)
    codes, scales = quantize.per_pixel(x, np.ones((20, 30), bool))
    assert (np.abs(codes).max(axis=0) == 127).all()                    # every pixel uses the whole range
    back, _ = quantize.per_pixel_values(codes, scales)
    assert (np.abs(back - x) <= scales / 2 * (1 + 1e-6)).all()


def test_per_pixel_values_treat_tesseras_sentinels_and_zero_scales_as_no_data():
    codes = np.ones((2, 1, 4), np.int8)
    values, ok = quantize.per_pixel_values(codes, np.array([[0.5, np.nan, np.inf, 0]], np.float32))
    np.testing.assert_array_equal(ok, [[True, False, False, False]])
    assert (values[:, 0, 0] == 0.5).all() and np.isnan(values[:, 0, 1:]).all()
