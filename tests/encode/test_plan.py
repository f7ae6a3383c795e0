"""The plan's pure parts: the device from the cluster's resources, the actor pool shape."""

import pytest

from rayvit.encode.plan import PER_ACTOR, EncodeOptions, actor_cpus, choose_device, pool_shape, queue_depth
from rayvit.errors import InputError


@pytest.mark.parametrize("requested,gpus,expected", [
    ("auto", 0, "cpu"),
    ("auto", 4, "cuda"),       # a CPU-only head node with GPU workers: the workers' GPUs count
    ("auto", 0.5, "cpu"),      # a fraction of a GPU cannot hold one actor
    ("cpu", 8, "cpu"),
    ("cuda", 1, "cuda"),
    ("cuda:1", 2, "cuda:1"),
])
def test_device_is_resolved_from_the_clusters_gpus(requested, gpus, expected):
    assert choose_device(requested, gpus) == expected


def test_cuda_on_a_cluster_without_gpus_is_a_clear_error():
    with pytest.raises(InputError, match="--device cuda was asked for, but the Ray cluster has no GPU"):
        choose_device("cuda", 0)
    with pytest.raises(InputError, match="unknown --device 'tpu'; valid: auto, cpu, cuda, cuda:N"):
        EncodeOptions(device="tpu").check()


def test_one_actor_per_gpu_across_nodes_and_cpu_actors_hold_a_token_cpu():
    assert pool_shape(cpus=48, gpus=4, node_cpus=16, on_gpu=True, actors=None, threads=None) == (4, 1)
    assert pool_shape(cpus=2, gpus=0, node_cpus=2, on_gpu=False, actors=None, threads=None) == (2, 1)
    assert pool_shape(cpus=32, gpus=0, node_cpus=16, on_gpu=False, actors=None, threads=None) == (8, 4)
    assert actor_cpus(2, 2, on_gpu=False) == 0.05      # threads decide the cores; idle actors hold none
    assert actor_cpus(8, 2, on_gpu=True) == 1.0
    with pytest.raises(InputError, match="--actors 40 is too many for the 2 CPUs"):
        actor_cpus(2, 40, on_gpu=False)


def test_a_gpu_actor_gets_as_many_blocks_in_flight_as_the_cpus_beside_it_can_read():
    assert queue_depth(cpus=16, actors=1, on_gpu=True) == 15        # one H100 node: 15 reads at once
    assert queue_depth(cpus=64, actors=4, on_gpu=True) == 15        # four such nodes
    assert queue_depth(cpus=16, actors=8, on_gpu=True) == PER_ACTOR  # 8 GPUs on 16 cores: at least 2
    assert queue_depth(cpus=2, actors=2, on_gpu=False) == PER_ACTOR  # CPU actors share the cores


def test_run_record_of_a_stac_item_hides_signed_asset_urls():
    from rayvit.encode.plan import _public
    from rayvit.io.mosaic import Source

    asset = Source("https://acct.blob.core.windows.net/c/b04.tif?sv=1&sig=SECRET", "", (10, 0, 0, 0, -10, 0),
                   4, 4, 1, "uint16", None)
    item = Source("stac:s2/x", "", (10, 0, 0, 0, -10, 0), 4, 4, 1, "uint16", None, parts=(asset,), part_bands=(1,))
    record = _public(item)
    assert "SECRET" not in repr(record) and record["parts"][0]["url"].endswith("sv=1&sig=***")


@pytest.mark.parametrize("kwargs, message", [
    (dict(assets=("red",)), "--assets select STAC items: give them with --stac"),
    (dict(stac="items.json"), "--stac needs --assets"),
    (dict(stac="items.json", assets=("red",), by_date=True, composite="last"), "choose one of them"),
])
def test_stac_options_that_do_not_go_together(kwargs, message):
    with pytest.raises(InputError, match=message):
        EncodeOptions(**kwargs).check()


def test_a_models_plan_is_kept_for_the_next_run_unless_a_download_or_its_weights_file_changed(tmp_path, monkeypatch):
    """The driver plans a model once (importing torch and timm); the next plan of the same
    spec reads what it kept. A changed --weights file is planned again; a spec whose weights
    would come from a download is never kept."""
    import os

    import torch

    from rayvit.encode import model, plan
    from rayvit.encode.spec import ModelSpec

    monkeypatch.setenv("RAYVIT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = model.plan_model

    def counting(spec):
        calls.append(spec.name)
        return real(spec)

    monkeypatch.setattr(model, "plan_model", counting)
    spec = ModelSpec("vit_tiny_patch16_224", 3, (32, 32), pretrained=False)
    first = plan.model_info(spec)
    assert plan.model_info(spec) == first and calls == ["vit_tiny_patch16_224"]
    assert first == real(spec) and os.listdir(tmp_path / "cache" / "models")
    assert plan.model_info(ModelSpec("vit_tiny_patch16_224", 3, (32, 32), pretrained=False, layer=-2)).layer == 10
    assert len(calls) == 2
    # a local weights file: kept, and planned again when the file changes
    weights = tmp_path / "w.pth"
    torch.save(model.build_model(spec).state_dict(), weights)
    with_weights = ModelSpec("vit_tiny_patch16_224", 3, (32, 32), pretrained=True, weights=str(weights))
    kept = plan.model_info(with_weights)
    assert plan.model_info(with_weights) == kept and len(calls) == 3 and kept.weights_sha256
    os.utime(weights, ns=(1, 1))
    assert plan.model_info(with_weights) == kept and len(calls) == 4
    # pretrained weights from the hub (a download): never kept
    assert plan._model_cache(ModelSpec("vit_tiny_patch16_224", 3, (32, 32), pretrained=True)) is None
