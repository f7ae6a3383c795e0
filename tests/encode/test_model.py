"""timm model resolution and the patch grid (no Ray needed)."""

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from rayvit.encode.stages.device import DeviceStage, encode_array
from rayvit.encode.model import ModelSpec, build_model, model_info, plan_model
from rayvit.errors import ModelError


def run(spec, pixels, valid=None):
    model = build_model(spec)
    info = model_info(model, spec)
    valid = np.ones((pixels.shape[0],) + pixels.shape[2:], bool) if valid is None else valid
    c = pixels.shape[1]
    return encode_array(model, info, spec, pixels, valid, (0.0,) * c, (1.0,) * c), info


@pytest.mark.parametrize("name,size,grid,prefix", [
    ("vit_tiny_patch16_224", (64, 64), (4, 4), 1),                      # CLS token
    ("vit_small_patch14_reg4_dinov2", (56, 56), (4, 4), 5),             # CLS + 4 registers
    ("vit_small_patch14_reg4_dinov2", (28, 84), (2, 6), 5),             # non-square tile
    ("vit_base_patch16_dinov3", (32, 64), (2, 4), 5),                   # RoPE ViT with registers
])
def test_cls_and_register_token_models_give_the_patch_grid(name, size, grid, prefix):
    pixels = np.random.default_rng(0).random((2, 5, *size), dtype=np.float32)
    (feats, fvalid), info = run(ModelSpec(name, 5, size, pretrained=False), pixels)
    assert feats.shape == (2, info.num_features, *grid)
    assert fvalid.shape == (2, *grid) and fvalid.all()
    m = build_model(ModelSpec(name, 5, size, pretrained=False))
    assert m.num_prefix_tokens == prefix  # sqrt(T - 1) would be wrong for every reg model
    assert np.isfinite(feats).all() and feats.std() > 0


def test_features_equal_timms_own_patch_tokens():
    """The grid is timm's forward_features patch tokens, reshaped: no token is lost or shifted."""
    spec = ModelSpec("vit_small_patch14_reg4_dinov2", 3, (28, 56), pretrained=False)
    pixels = np.random.default_rng(1).random((1, 3, 28, 56), dtype=np.float32)
    (feats, _), _ = run(spec, pixels)
    model = build_model(spec)
    with torch.inference_mode():
        tokens = model.forward_features(torch.from_numpy(pixels))[:, model.num_prefix_tokens:]
    np.testing.assert_allclose(feats[0], tokens[0].T.reshape(-1, 2, 4).numpy(), rtol=1e-4, atol=1e-5)


def test_layer_picks_a_block():
    pixels = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    (last, _), info = run(ModelSpec("vit_tiny_patch16_224", 3, (32, 32), pretrained=False), pixels)
    (first, _), info0 = run(ModelSpec("vit_tiny_patch16_224", 3, (32, 32), pretrained=False, layer=0), pixels)
    assert (info.layer, info0.layer, info.n_layers) == (11, 0, 12)
    assert last.shape == first.shape and not np.allclose(last, first)
    with pytest.raises(ModelError, match="--layer 12 is out of range.*-12..11"):
        model_info(build_model(ModelSpec("vit_tiny_patch16_224", 3, (32, 32), pretrained=False)),
                   ModelSpec("vit_tiny_patch16_224", 3, (32, 32), pretrained=False, layer=12))


def test_resize_model_uses_the_models_input_size():
    spec = ModelSpec("vit_tiny_patch16_224", 3, (448, 448), pretrained=False, resize="model")
    pixels = np.zeros((1, 3, 448, 448), np.float32)
    (feats, _), info = run(spec, pixels)
    assert feats.shape[-2:] == (14, 14) and info.footprint(spec) == (32, 32)
    with pytest.raises(ModelError, match="multiple of the model's patch grid.*nearest valid sizes: 434, 448"):
        info.footprint(ModelSpec("vit_tiny_patch16_224", 3, (440, 440), resize="model"))


def test_tiles_without_valid_pixels_skip_the_model():
    pixels = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    valid = np.ones((2, 32, 32), bool)
    valid[1] = False
    valid[0, :16, :16] = False
    (feats, fvalid), _ = run(ModelSpec("vit_tiny_patch16_224", 3, (32, 32), pretrained=False), pixels, valid)
    assert (feats[1] == 0).all() and not fvalid[1].any()
    assert fvalid[0].tolist() == [[False, True], [True, True]]


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_are_loaded(tmp_path, suffix):
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    torch.nn.init.normal_(src.pos_embed, std=0.5)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    m = build_model(ModelSpec("vit_tiny_patch16_224", 3, (224, 224), weights=str(path)))
    torch.testing.assert_close(m.pos_embed, src.pos_embed)
    assert model_info(m, ModelSpec("vit_tiny_patch16_224", 3, (224, 224), weights=str(path))).weights_sha256


def test_pth_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": torch.zeros(1), "obj": DeviceStage}, path)  # a pickled class, not just tensors
    with pytest.raises(ModelError):
        build_model(ModelSpec("vit_tiny_patch16_224", 3, (224, 224), weights=str(path)))


def test_weights_of_another_shape_are_a_clear_error(tmp_path):
    other = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, path)
    with pytest.raises(ModelError, match="small.safetensors.*does not fit model 'vit_tiny_patch16_224'"):
        build_model(ModelSpec("vit_tiny_patch16_224", 3, (224, 224), weights=str(path)))
    with pytest.raises(ModelError, match="small.safetensors.*does not fit model 'vit_tiny_patch16_224'"):
        plan_model(ModelSpec("vit_tiny_patch16_224", 3, (224, 224), weights=str(path)))


def test_a_plan_loads_fitting_weights_into_the_meta_model_quietly(tmp_path, recwarn):
    """torch warns once per tensor that loading into a meta parameter is a no-op: a plan
    expects that, and the user sees nothing of it."""
    tiny = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, path)
    spec = ModelSpec("vit_tiny_patch16_224", 3, (224, 224), weights=str(path))
    assert plan_model(spec) == model_info(build_model(spec), spec)
    assert not [w for w in recwarn if "meta" in str(w.message)]


@pytest.mark.parametrize("name,size,layer", [("vit_small_patch14_reg4_dinov2", (28, 84), -2),
                                             ("vit_base_patch16_dinov3", (32, 64), 3), ("rayvit_patchmean_p4", (16, 16), -1)])
def test_a_plan_reads_the_same_model_from_the_meta_device(name, size, layer):
    """What a plan reads of a model (geometry, layers, preprocessing) from the model built on
    the meta device (shapes, no numbers) equals what the real model gives."""
    spec = ModelSpec(name, 5, size, pretrained=False, layer=layer)
    assert plan_model(spec) == model_info(build_model(spec), spec)


def test_unknown_model_and_unreachable_hub():
    with pytest.raises(ModelError, match=r"unknown model 'vit_tinyy_patch16'.*timm architecture \(similar:"):
        build_model(ModelSpec("vit_tinyy_patch16", 3, (224, 224)))
    with pytest.raises(ModelError, match="could not be fetched.*--weights FILE.*--no-pretrained"):
        build_model(ModelSpec("vit_tiny_patch16_224", 3, (224, 224), pretrained=True))
