"""The `rayvit` command: in this process through ``rayvit.cli.main`` (dry run, refusals,
bad input, what one call leaves for the next), and in fresh processes where the process is
the subject (start-up with --help, a killed driver and its resume)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
from conftest import FAULT_ARGS, FAULT_BLOCKS, ROOT, blocks_done, read, run_cli, run_process, seeded_image, write_raster
from safetensors.torch import save_file

TINY = ["--model", "vit_tiny_patch16_224", "--no-pretrained", "--quiet"]
pytestmark = pytest.mark.usefixtures("ray_local")


JOB = ROOT / "jobs" / "unsupervised-map.yaml"


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    return write_raster(tmp_path_factory.mktemp("cli") / "in.tif", seeded_image((3, 64, 96)))


def test_help_documents_every_option():
    """In a fresh process: the console script starts and prints help without Ray."""
    wide = dict(os.environ, COLUMNS="100")         # argparse wraps help to the terminal's width
    r = run_process("encode", "--help", env=wide)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for flag in ("--model", "--pretrained", "--no-pretrained", "--weights", "--layer", "--bands", "--extent",
                 "--extent-crs", "--crs", "--res", "--size", "--stride", "--resize", "--merge", "--normalize",
                 "--mean", "--std", "--dtype", "--blocks", "--block-size", "--device", "--precision", "--actors",
                 "--threads", "--batch-size", "--overwrite", "--dry-run", "--address", "--output"):
        assert flag in out, flag
    assert "rayvit encode scene.tif -o out/" in out
    assert run_cli("encode", "--help", env=wide).stdout == out     # the same text in process


def test_a_command_leaves_nothing_behind_that_changes_the_next(raster, tmp_path, capsys):
    """``main`` twice in one process: the same output both times (a warning included: not
    "once per process"), and --s3-endpoint does not outlive its command."""
    from rasterio.transform import from_origin

    from rayvit.cli import main
    coarse = write_raster(tmp_path / "coarse.tif", seeded_image((3, 16, 24)), from_origin(500960, 4000000, 20, 20))
    before = os.environ.get("AWS_ENDPOINT_URL")
    args = ["encode", raster, coarse, "-o", str(tmp_path / "o"), *TINY, "--size", "32", "--dry-run",
            "--s3-endpoint", "http://127.0.0.1:9"]
    outputs = []
    for _ in range(2):
        assert main(args) == 0
        assert os.environ.get("AWS_ENDPOINT_URL") == before
        outputs.append(capsys.readouterr())
    assert "1 of 2 input rasters are not on the target grid" in outputs[0].err
    assert outputs[0].err == outputs[1].err

    def plan(out):    # the estimate line holds a rate measured by each run
        return [line for line in out.splitlines() if not line.startswith("estimate:")]
    assert plan(outputs[0].out) == plan(outputs[1].out) and "tiles:    10 (2x5)" in outputs[0].out


def test_an_address_other_than_the_connected_ray_is_an_error(raster, tmp_path):
    r = run_cli("encode", raster, "-o", tmp_path / "o", *TINY, "--size", "32", "--address", "127.0.0.1:9")
    assert r.returncode == 2 and "already connected to Ray at" in r.stderr and "--address 127.0.0.1:9" in r.stderr
    assert not (tmp_path / "o").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(raster, tmp_path):
    r = run_cli("encode", raster, "-o", tmp_path / "o", *TINY, "--size", "32", "--stride", "16", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "tiles:    15 (3x5) of 32x32 px, stride 16x16, merge center" in r.stdout
    assert "output:   6x4 px x 192 bands float32, 18432 bytes" in r.stdout
    assert re.search(r"estimate: +[0-9.]+ tiles/s per actor measured here .* -> ~[0-9]+ s of encoding", r.stdout)
    assert not (tmp_path / "o").exists()
    for cmd in (["reduce", raster], ["cluster", raster], ["similarity", raster, raster], ["run", JOB]):
        d = run_cli(*cmd, *(["-o", tmp_path / cmd[0]] if cmd[0] != "run" else []), "--dry-run")
        assert d.returncode == 0 and "dry run: nothing written." in d.stdout, d.stderr
        assert not (tmp_path / cmd[0]).exists()
    assert "96x64 px = 6144 pixels x 3 bands" in run_cli("reduce", raster, "-o", tmp_path / "r", "--dry-run").stdout


def test_encode_then_refuse_another_run_unless_overwrite(raster, tmp_path):
    out = tmp_path / "o"
    r = run_cli("encode", raster, "-o", out, *TINY, "--size", "32")
    assert r.returncode == 0, r.stderr
    assert "encoded 6/6 tiles" in r.stdout and "tiles/s" in r.stdout and "km2" in r.stdout
    again = run_cli("encode", raster, "-o", out, *TINY, "--size", "32")
    assert again.returncode == 0 and "already holds this run" in again.stderr
    other = run_cli("encode", raster, "-o", out, *TINY, "--size", "64")
    assert other.returncode == 2 and "holds a different run" in other.stderr and "--overwrite" in other.stderr
    first = (out / "features.tif").read_bytes()
    assert read(out / "features.tif")[0].shape == (192, 4, 6)  # untouched
    over = run_cli("encode", raster, "-o", out, *TINY, "--size", "64", "--overwrite")
    assert over.returncode == 0, over.stderr
    assert (out / "features.tif").read_bytes() != first
    assert json.loads((out / "features.json").read_text())["size"] == [64, 64]


@pytest.mark.slow
def test_resume_after_a_kill_is_byte_identical(clean_run, tmp_path):
    """The driver process killed mid-run; the same command, run again, resumes."""
    path, clean = clean_run
    out = tmp_path / "killed"
    exe = Path(sys.executable).with_name("rayvit")
    proc = subprocess.Popen([str(exe), "encode", path, "-o", str(out), *FAULT_ARGS], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while blocks_done(out) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = blocks_done(out)
    assert 0 < done < FAULT_BLOCKS, f"the kill landed after {done} of {FAULT_BLOCKS} blocks: not an interruption"
    assert not list(out.glob("features.*"))  # nothing that looks complete
    resumed = run_cli("encode", path, "-o", out, *FAULT_ARGS)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} blocks resumed" in resumed.stdout or f"{done + 1} blocks resumed" in resumed.stdout
    assert (out / "features.tif").read_bytes() == (clean / "features.tif").read_bytes()
    sidecar = json.loads((out / "features.json").read_text())
    clean_sidecar = json.loads((clean / "features.json").read_text())
    # identical but for what each run did: its timings and the tiles it encoded
    assert sidecar.pop("timings")["tiles_encoded"] < clean_sidecar.pop("timings")["tiles_encoded"]
    assert sidecar == clean_sidecar


def _bad_inputs(tmp: Path, raster: str):
    nocrs = write_raster(tmp / "nocrs.tif", seeded_image((3, 32, 32)), crs=None)
    corrupt = tmp / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    small = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    wrong = tmp / "small.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, wrong)
    return {
        "missing file": ([tmp / "nope.tif"], [], "nope.tif' does not exist"),
        "missing URL": (["https://127.0.0.1:9/none.tif"], [], "none.tif"),
        "corrupt raster": ([corrupt], [], "corrupt.tif' is not a readable raster"),
        "no CRS": ([nocrs], [], "nocrs.tif' has no CRS"),
        "band out of range": ([raster], ["--bands", "1,4"], "band 4 is out of range"),
        "size below a patch": ([raster], ["--size", "8"], "smaller than one model patch"),
        "stride above size": ([raster], ["--size", "32", "--stride", "48"], "between 1 and the tile size"),
        "stride off the grid": ([raster], ["--size", "32", "--stride", "24"], "nearest valid strides: 16, 32"),
        "extent outside": ([raster], ["--extent", "0,0,10,10"], "lies outside the data"),
        "unknown model": ([raster], ["--model", "vit_nonexistent_x"], "unknown model 'vit_nonexistent_x'"),
        "weights of another shape": ([raster], ["--weights", wrong], "does not fit model"),
        "cuda without GPU": ([raster], ["--device", "cuda"], "the Ray cluster has no GPU"),
        "hub unreachable": ([raster], ["--pretrained"], "--weights FILE"),
    }


def test_bad_inputs_fail_clearly_and_write_nothing(raster, tmp_path):
    failures = []
    for name, (inputs, extra, message) in _bad_inputs(tmp_path, raster).items():
        out = tmp_path / name.replace(" ", "_")
        args = ["encode", *inputs, "-o", out, "--model", "vit_tiny_patch16_224", "--no-pretrained",
                "--size", "32", *extra]
        r = run_cli(*args)
        if r.returncode != 2 or message not in r.stderr or "Traceback" in r.stderr or out.exists():
            failures.append(f"{name}: rc={r.returncode} out_exists={out.exists()} stderr={r.stderr[-600:]}")
        else:
            assert r.stderr.startswith("rayvit encode: error: ")
    assert not failures, "\n".join(failures)


def test_python_api_names_survive_subpackage_imports():
    """``rayvit.encode`` stays the function after ``rayvit.encode.*`` modules are imported
    (a subpackage import would otherwise rebind the name), and importing the package
    loads neither torch nor scikit-learn."""
    code = ("import sys, rayvit; assert 'torch' not in sys.modules and 'sklearn' not in sys.modules; "
            "import rayvit.encode.pipeline, rayvit.encode.merge; "
            "from rayvit.encode.pipeline import encode; assert rayvit.encode is encode, rayvit.encode; "
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_every_registered_stage_and_the_bench_plugin_are_commands(capsys):
    """`rayvit --help` lists the registry's stages without importing them (in a process of its
    own); `rayvit bench` comes from the `rayvit.commands` entry point (the product does not
    import it)."""
    import subprocess
    import sys

    from rayvit.cli import main
    from rayvit.stages import STAGES

    probe = subprocess.run([sys.executable, "-c", "import sys\nfrom rayvit.cli import main\nmain(['--help'])\n"
                            "print('imported:', [m for m in sys.modules if m.startswith('rayvit.analysis.')])"],
                           capture_output=True, text=True)
    assert all(f"    {name}" in probe.stdout for name in STAGES) and "    bench" in probe.stdout, probe.stdout
    assert "imported: []" in probe.stdout                      # nothing imported to list them
    assert main(["bench", "--help"]) == 0 and "pipeline" in capsys.readouterr().out
    assert main(["change", "--help"]) == 0 and "--zscore" in capsys.readouterr().out
