"""Several Ray nodes on one machine (`ray start` head + worker node): device actors on both
share the blocks (least busy actor first, not data locality), analysis tasks spread over both,
and the outputs are byte-identical to a single-node run.

The encode is device-bound, as in production: when reads are the bottleneck (tiny tiles, a
trivial model), every block finds both actors idle and goes to the same (first) one, which is
right (no actor is waiting for work) but shows nothing about the spread."""

import re

import pytest
from conftest import run_cli, run_process, seeded_image, write_raster


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_two_nodes_give_the_single_node_output(cluster, tmp_path):
    src = write_raster(tmp_path / "scene.tif", seeded_image((3, 1024, 1024), seed=5))
    # 25 tiles of 224 px on a ViT-S, one per block: the device actors are the bottleneck;
    # two actors, one per node (SPREAD; the head has 2 CPUs, the worker node 1)
    enc = ["--model", "vit_small_patch16_224", "--no-pretrained", "--size", "224", "--block-size", "14",
           "--actors", "2", "--quiet"]
    single = run_cli("encode", src, "-o", tmp_path / "one", *enc)
    assert single.returncode == 0, single.stderr
    assert run_cli("reduce", tmp_path / "one" / "features.tif", "-o", tmp_path / "one_pca", "--block-size", "16",
                   "--quiet").returncode == 0
    # drivers of their own that join the session's two-node cluster (this process is on its local Ray)
    cluster["wait_idle"]()
    multi = run_process("encode", src, "-o", tmp_path / "two", *enc, "--address", cluster["address"],
                        env=cluster["env"])
    assert multi.returncode == 0, multi.stderr
    cluster["wait_idle"]()  # else the encode's actors may still hold one node's CPU
    pca = run_process("reduce", tmp_path / "two" / "features.tif", "-o", tmp_path / "two_pca", "--block-size", "16",
                      "--quiet", "--address", cluster["address"], env=cluster["env"])
    assert pca.returncode == 0, pca.stderr
    assert "on 1 Ray node(s)" in single.stdout
    assert "on 2 Ray node(s)" in multi.stdout, multi.stdout     # device actors on both nodes
    split = [int(n) for n in re.search(r"\((\d+) \+ (\d+) tiles\)", multi.stdout).groups()]
    assert sum(split) == 25 and min(split) >= 25 // 8, multi.stdout   # and both did a real share
    assert "on 2 Ray node(s)" in pca.stdout, pca.stdout         # analysis tasks on both nodes
    assert (tmp_path / "two" / "features.tif").read_bytes() == (tmp_path / "one" / "features.tif").read_bytes()
    assert (tmp_path / "two_pca" / "reduced.tif").read_bytes() == (tmp_path / "one_pca" / "reduced.tif").read_bytes()
