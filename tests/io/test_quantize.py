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
