"""Every remote-sensing preset through the whole encode pipeline (random weights, real Ray,
real GeoTIFFs with named bands), and the bad inputs around presets and bands."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import read, run_cli, seeded_image, write_raster
from rasterio.transform import from_origin

from rayvit import encode
from rayvit.encode.presets import PRESETS

pytestmark = pytest.mark.usefixtures("ray_local")
DOFA_BANDS = ("B04", "B03", "B02", "B08")


def named_raster(path, names, shape=(64, 128), dtype="uint16", seed=0, transform=None, crs="EPSG:32633"):
    high = 255 if dtype == "uint8" else 5000
    data = seeded_image((len(names), *shape), seed=seed, high=high, dtype=dtype)
    path = write_raster(path, data, transform=transform, crs=crs)
    import rasterio
    with rasterio.open(path, "r+") as ds:
        for i, name in enumerate(names):
            ds.set_band_description(i + 1, name)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_gives_the_grid_and_width_it_declares(name, tmp_path):
    p = PRESETS[name]
    expected = [b.name for b in p.bands] or list(DOFA_BANDS)
    in_file = list(reversed(expected))                  # the file's order is not the model's
    dtype = "uint8" if p.scale == (255.0,) else "uint16"
    path = named_raster(tmp_path / "in.tif", in_file, dtype=dtype)
    r = encode(path, tmp_path / "out", model=name, pretrained=False, size=64, progress=False)
    feats, profile, _, _ = read(r.output)
    assert feats.shape == (p.width, 64 // p.patch, 128 // p.patch)
    assert np.isfinite(feats).all() and feats.std() > 0
    side = json.loads((tmp_path / "out" / "features.json").read_text())
    assert side["preset"] == name and side["num_features"] == p.width
    fed = {r["input"]: r["raster_band"] for r in side["band_map"]}
    if p.wavelengths:   # any bands, in the file's order, each with its wavelength
        assert fed == {i: i + 1 for i in range(len(expected))}
        assert [r["wavelength_um"] for r in side["band_map"]] == [0.842, 0.49, 0.56, 0.665]
        assert side["normalization"]["mode"] == "stats"
    else:               # each model input is fed by the raster band of its name
        assert fed == {i: len(expected) - i for i in range(len(expected))}
        assert side["normalization"]["mode"] == "preset"
        assert side["normalization"]["std"] == [p.per_band(p.std, i) * p.per_band(p.scale, i)
                                                for i in range(p.in_chans)]
        assert side["normalization"]["mean"] == [p.per_band(p.mean, i) * p.per_band(p.scale, i)
                                                 for i in range(p.in_chans)]


def test_fewer_bands_run_with_an_explicit_fill_and_the_sidecar_says_so(tmp_path):
    path = named_raster(tmp_path / "in.tif", ("B2", "B3", "B4", "B8"), shape=(32, 32))
    fill = encode(path, tmp_path / "fill", model="ssl4eo-s2-vit-s16-dino", pretrained=False, size=32,
                  band_fill="zero", progress=False)
    side = json.loads((tmp_path / "fill" / "features.json").read_text())
    assert side["band_fill"] == "zero"
    filled = [r["band"] for r in side["band_map"] if "fill" in r]
    assert filled == ["B01", "B05", "B06", "B07", "B8A", "B09", "B10", "B11", "B12"]
    assert [r["raster_band"] for r in side["band_map"] if "fill" not in r] == [1, 2, 3, 4]
    # the same pixels with the 9 other bands present as zeros give the same features
    full = np.zeros((13, 32, 32), np.uint16)
    full[[1, 2, 3, 7]] = read(path)[0]
    whole = named_raster(tmp_path / "all.tif", [b.name for b in PRESETS["ssl4eo-s2-vit-s16-dino"].bands],
                         shape=(32, 32))
    import rasterio
    with rasterio.open(whole, "r+") as ds:
        ds.write(full)
    ref = encode(whole, tmp_path / "ref", model="ssl4eo-s2-vit-s16-dino", pretrained=False, size=32,
                 progress=False)
    np.testing.assert_allclose(read(fill.output)[0], read(ref.output)[0], rtol=1e-5, atol=1e-5)


def test_bands_by_name_and_by_sensor(tmp_path):
    path = named_raster(tmp_path / "in.tif", ("B02", "B03", "B04", "QA"), shape=(32, 32))
    r = run_cli("encode", path, "-o", tmp_path / "n", "--model", "vit_tiny_patch16_224", "--no-pretrained",
                "--size", "32", "--bands", "B04,B03,B02", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "n" / "features.json").read_text())["bands"] == [3, 2, 1]
    bad = run_cli("encode", path, "-o", tmp_path / "b", "--model", "vit_tiny_patch16_224", "--no-pretrained",
                  "--size", "32", "--bands", "B05")
    assert bad.returncode == 2 and "no band is called 'B05'" in bad.stderr and "B02, B03, B04, QA" in bad.stderr
    unnamed = write_raster(tmp_path / "u.tif", seeded_image((13, 32, 32), dtype="uint16", high=3000))
    s = run_cli("encode", unnamed, "-o", tmp_path / "s", "--model", "ssl4eo-s2-vit-s16-moco", "--no-pretrained",
                "--size", "32", "--bands", "sentinel-2", "--quiet")
    assert s.returncode == 0, s.stderr
    side = json.loads((tmp_path / "s" / "features.json").read_text())
    assert [r["raster_name"] for r in side["band_map"]][8] == "B8A"
    assert not (tmp_path / "b").exists()


def test_a_mosaic_of_files_with_different_bands_is_an_error_unless_bands_select_common_ones(tmp_path):
    a = write_raster(tmp_path / "a.tif", seeded_image((3, 32, 32)))
    b = write_raster(tmp_path / "b.tif", seeded_image((1, 32, 32)), crs="EPSG:32632",
                     transform=from_origin(1040398, 4016734, 10, 10))   # just east of a.tif
    args = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32"]
    r = run_cli("encode", a, b, "-o", tmp_path / "x", *args)
    assert r.returncode == 2
    assert "differ in their bands" in r.stderr and "a.tif: 3 bands" in r.stderr and "b.tif: 1 band " in r.stderr
    assert not (tmp_path / "x").exists()
    ok = run_cli("encode", a, b, "-o", tmp_path / "y", *args, "--bands", "1", "--quiet")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("args,message", [
    (["--model", "satlas-s2-swin"], "close: satlas-s2-swinb"),
    (["--model", "ssl4eo-s2-vit-s16-dino", "--bands", "B02,B03"],
     "needs band(s) B01, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12"),
    (["--model", "vit_tiny_patch16_224", "--wavelengths", "0.49,0.56"], "does not take band wavelengths"),
    (["--model", "vit_tiny_patch16_224", "--band-fill", "zero"], "no fixed list of input bands"),
])
def test_bad_preset_inputs_fail_clearly_and_write_nothing(tmp_path, args, message):
    path = named_raster(tmp_path / "in.tif", ("B02", "B03"), shape=(32, 32))
    r = run_cli("encode", path, "-o", tmp_path / "o", "--no-pretrained", "--size", "32", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_weights_of_another_preset_fail_naming_both(tmp_path):
    from rayvit.encode.model import inner_model, preset_architecture
    torch.save(inner_model(preset_architecture(PRESETS["ssl4eo-s2-vit-s16-mae"], 13, (32, 32))).state_dict(),
               tmp_path / "vits13.pth")
    path = named_raster(tmp_path / "in.tif", ("R", "G", "B"), shape=(32, 32), dtype="uint8")
    r = run_cli("encode", path, "-o", tmp_path / "o", "--model", "satlas-naip-swinb", "--size", "32",
                "--weights", tmp_path / "vits13.pth")
    assert r.returncode == 2
    assert "does not fit preset 'satlas-naip-swinb'" in r.stderr and "'ssl4eo-s2-vit-s16-mae'" in r.stderr
    assert not (tmp_path / "o").exists()


def test_a_preset_that_needs_the_extra_says_how_to_install_it(tmp_path, monkeypatch):
    path = named_raster(tmp_path / "in.tif", DOFA_BANDS, shape=(32, 32))
    monkeypatch.setitem(sys.modules, "torchgeo", None)              # as if torchgeo were not installed
    r = run_cli("encode", path, "-o", tmp_path / "o", "--model", "dofa-vit-b16", "--no-pretrained", "--size", "32")
    assert r.returncode == 2 and "pip install 'rayvit[torchgeo]'" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_rayvit_models_lists_every_preset():
    r = run_cli("models")
    assert r.returncode == 0
    for p in PRESETS.values():
        assert p.name in r.stdout
    one = json.loads(run_cli("models", "satlas-s2-swinb", "--json").stdout)
    assert one[0]["patch"] == 32 and [b["name"] for b in one[0]["bands"]][:3] == ["B04", "B03", "B02"]
