"""Several Ray nodes on one machine (`ray start` head + worker node): encoder actors on both
share the tiles (least busy actor first, not data locality), analysis tasks spread over both,
and the outputs are byte-identical to a single-node run."""

import re

from conftest import run_cli, seeded_image, write_raster
from raycluster import ray_cluster


def test_two_nodes_give_the_single_node_output(tmp_path):
    src = write_raster(tmp_path / "scene.tif", seeded_image((3, 512, 1024), seed=5))
    enc = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--size", "32", "--batch-size", "4",
           "--block-size", "8", "--quiet"]          # 32 blocks of 16 tiles: work for both nodes
    single = run_cli("encode", src, "-o", tmp_path / "one", *enc)
    assert single.returncode == 0, single.stderr
    assert run_cli("reduce", tmp_path / "one" / "features.tif", "-o", tmp_path / "one_pca", "--block-size", "4",
                   "--quiet").returncode == 0
    with ray_cluster(tmp_path, node_cpus=(1, 1)) as cluster:
        multi = run_cli("encode", src, "-o", tmp_path / "two", *enc, "--address", cluster["address"],
                        env=cluster["env"])
        assert multi.returncode == 0, multi.stderr
        cluster["wait_idle"]()  # else the encode's actors may still hold one node's CPU
        pca = run_cli("reduce", tmp_path / "two" / "features.tif", "-o", tmp_path / "two_pca", "--block-size", "4",
                      "--quiet", "--address", cluster["address"], env=cluster["env"])
        assert pca.returncode == 0, pca.stderr
    assert "on 1 Ray node(s)" in single.stdout
    assert "on 2 Ray node(s)" in multi.stdout, multi.stdout     # encoder actors on both nodes
    split = [int(n) for n in re.search(r"\((\d+) \+ (\d+) tiles\)", multi.stdout).groups()]
    assert sum(split) == 512 and min(split) >= 512 // 8, multi.stdout  # and both did a real share
    assert "on 2 Ray node(s)" in pca.stdout, pca.stdout         # analysis tasks on both nodes
    assert (tmp_path / "two" / "features.tif").read_bytes() == (tmp_path / "one" / "features.tif").read_bytes()
    assert (tmp_path / "two_pca" / "reduced.tif").read_bytes() == (tmp_path / "one_pca" / "reduced.tif").read_bytes()
