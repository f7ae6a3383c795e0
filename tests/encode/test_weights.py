"""Preset weights: published layouts converted, files of other presets named, nothing pickled
executed. Each layout is tested by saving a randomly initialised model in it and loading it
back: the features must be identical."""

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rayvit.encode.model import build_model, inner_model, model_info, plan_model
from rayvit.encode.spec import ModelSpec
from rayvit.encode.stages.device import encode_array
from rayvit.errors import ModelError


def features(spec, pixels):
    model = build_model(spec)
    info = model_info(model, spec)
    c = pixels.shape[1]
    return encode_array(model, info, spec, pixels, np.ones((len(pixels), *pixels.shape[2:]), bool),
                        (0.0,) * c, (1.0,) * c)[0], info


def random_state(spec, seed):
    """A model of ``spec``'s architecture with other random weights than rayvit's seeded ones."""
    from rayvit.encode.model import preset_architecture
    from rayvit.encode.presets import PRESETS

    torch.manual_seed(seed)
    model = preset_architecture(PRESETS[spec.preset], spec.model_chans, spec.tile_size, spec.wavelengths)
    return {k: v.clone() for k, v in inner_model(model).state_dict().items()}


LAYOUTS = {
    # SSL4EO-S12 MoCo: DDP + query encoder wrapper, the projection head alongside
    "ssl4eo-s2-vit-s16-moco": lambda s: {"state_dict": {**{f"module.encoder_q.{k}": v for k, v in s.items()},
                                                        "module.encoder_q.head.weight": torch.zeros(3, 3)}},
    # SatlasPretrain: Swin under backbone.backbone., with an FPN and heads
    "satlas-naip-swinb": lambda s: {**{f"backbone.backbone.{k}": v for k, v in s.items()},
                                    "fpn.layer.weight": torch.zeros(2), "heads.0.bias": torch.zeros(2)},
    # TorchGeo's hosted DOFA: the encoder's keys, no dynamic head
    "dofa-vit-b16": lambda s: {k: v for k, v in s.items() if not k.startswith(("head.", "fc_norm."))},
}


@pytest.mark.parametrize("preset", list(LAYOUTS))
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_published_layout_loads_to_identical_features(preset, suffix, tmp_path):
    chans = 3 if preset != "ssl4eo-s2-vit-s16-moco" else 13
    spec = ModelSpec(preset, chans, (32, 32), pretrained=False, preset=preset,
                     wavelengths=(0.665, 0.56, 0.49) if preset.startswith("dofa") else None)
    state = random_state(spec, seed=7)
    saved = LAYOUTS[preset](state)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(saved, path)
    else:
        flat = saved.get("state_dict", saved)
        save_file({k: v.contiguous() for k, v in flat.items()}, str(path))
    pixels = np.random.default_rng(0).random((2, chans, 32, 32), dtype=np.float32)
    loaded, info = features(ModelSpec(preset, chans, (32, 32), weights=str(path), preset=preset,
                                      wavelengths=spec.wavelengths), pixels)
    random, _ = features(spec, pixels)
    # the reference: the same random model, built directly
    from rayvit.encode.model import preset_architecture
    from rayvit.encode.presets import PRESETS
    ref = preset_architecture(PRESETS[preset], chans, (32, 32), spec.wavelengths)
    inner_model(ref).load_state_dict(state)
    with torch.inference_mode():
        expected = ref.eval().forward_intermediates(torch.from_numpy(pixels), indices=[info.layer], norm=True,
                                                  output_fmt="NCHW", intermediates_only=True)[0]
    np.testing.assert_array_equal(loaded, expected.numpy())
    assert not np.array_equal(loaded, random)
    assert len(info.weights_sha256) == 64
    # what a plan reads of the model, built on the meta device with the same file
    assert plan_model(ModelSpec(preset, chans, (32, 32), weights=str(path), preset=preset,
                                wavelengths=spec.wavelengths)) == info


def test_weights_of_another_preset_name_both(tmp_path):
    spec = ModelSpec("satlas-naip-swinb", 3, (32, 32), pretrained=False, preset="satlas-naip-swinb")
    torch.save(random_state(spec, seed=1), tmp_path / "satlas.pth")
    with pytest.raises(ModelError) as e:
        build_model(ModelSpec("dinov3-sat-vit-l16", 3, (32, 32), weights=str(tmp_path / "satlas.pth"),
                              preset="dinov3-sat-vit-l16"))
    msg = str(e.value)
    assert "does not fit preset 'dinov3-sat-vit-l16'" in msg and "'satlas-naip-swinb'" in msg
    with pytest.raises(ModelError) as planned:      # a plan finds it too, on the meta device
        plan_model(ModelSpec("dinov3-sat-vit-l16", 3, (32, 32), weights=str(tmp_path / "satlas.pth"),
                             preset="dinov3-sat-vit-l16"))
    assert str(planned.value) == msg


class Boom:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_a_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Boom()}, fh, protocol=2)
    with pytest.raises(ModelError, match="without executing code"):
        build_model(ModelSpec("satlas-naip-swinb", 3, (32, 32), weights=str(path), preset="satlas-naip-swinb"))
    assert "pickled code ran" not in capsys.readouterr().out


def test_no_hub_names_the_preset_the_file_and_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError) as e:
        build_model(ModelSpec("ssl4eo-s2-vit-s16-dino", 13, (32, 32), preset="ssl4eo-s2-vit-s16-dino"))
    msg = str(e.value)
    assert "'ssl4eo-s2-vit-s16-dino'" in msg and "vit_small_patch16_224_sentinel2_all_dino-36bcc127.pth" in msg
    assert "--weights" in msg
