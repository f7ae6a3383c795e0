"""The ``rayvit`` command: parse, call the Python API, print a summary. Nothing else."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Sequence

from .version import __version__
from .errors import InputError, RayvitError
from .options import add_ray_options


def add_run(sub) -> None:
    p = sub.add_parser("run", help="run a multi-step job spec (YAML): encode -> reduce/cluster -> ...",
                       description="Run the steps of a job spec in order, each reading earlier steps' "
                                   "outputs by reference (${ID.output}, ${ID.model}, ${ID.dir}). The whole "
                                   "spec is validated first; errors name the step and field. Submit to a "
                                   "cluster with: ray job submit --working-dir . -- rayvit run jobs/X.yaml",
                       epilog="examples: jobs/quickstart.yaml, jobs/s3-mosaic.yaml, jobs/unsupervised-map.yaml")
    p.add_argument("spec", help="job spec YAML file")
    p.add_argument("--dry-run", action="store_true", help="validate and print the steps; run nothing")
    add_ray_options(p)
    p.set_defaults(func=run_job)


def run_job(args) -> int:
    from .job import run
    run(args.spec, dry_run=args.dry_run, address=args.address, progress=not args.quiet)
    return 0


def add_methods(sub) -> None:
    p = sub.add_parser("methods", help="list the estimators reduce/cluster accept for --method",
                       description="List the estimator names each analysis stage accepts for --method.")
    p.add_argument("stage", nargs="?", choices=("reduce", "cluster", "classify"), help="only this stage")
    p.set_defaults(func=run_methods)


def run_methods(args) -> int:
    from .analysis import cluster, estimators, reduce
    exact = {"reduce": reduce.EXACT, "cluster": cluster.EXACT, "classify": {}}
    for stage in [args.stage] if args.stage else list(exact):
        names = sorted(set(estimators.available(stage)) | set(exact[stage]))
        print(f"{stage}: " + ", ".join(f"{n} (exact, all pixels)" if n in exact[stage] else n for n in names))
    return 0


def add_models(sub) -> None:
    p = sub.add_parser("models", help="list the remote-sensing encoder presets (sensor, bands, patch, width, weights)",
                       description="List the encoder presets --model accepts besides any timm name: the "
                                   "sensor and bands each was trained on, its patch size and feature width, "
                                   "input scaling and where its weights come from.")
    p.add_argument("name", nargs="?", help="show one preset in full")
    p.add_argument("--json", action="store_true", help="print the registry as JSON")
    p.set_defaults(func=run_models)


def run_models(args) -> int:
    import json
    from dataclasses import asdict

    from .encode import presets

    chosen = list(presets.PRESETS.values())
    if args.name:
        if args.name not in presets.PRESETS:
            raise InputError(f"unknown preset {args.name!r}; close: "
                             f"{', '.join(presets.close_names(args.name)) or 'none'} (`rayvit models` lists all).")
        chosen = [presets.PRESETS[args.name]]
    if args.json:
        print(json.dumps([{k: v for k, v in asdict(p).items() if k != "options"} for p in chosen], indent=2))
        return 0
    rows = [("preset", "sensor", "bands", "patch", "width", "architecture", "extra")]
    for p in chosen:
        bands = (f"{p.in_chans}: " + ",".join(b.name for b in p.bands)) if p.bands else "any (wavelengths)"
        rows.append((p.name, p.sensor, bands, str(p.patch), str(p.width), p.architecture, p.extra or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if args.name:
        p = chosen[0]
        print(f"\nweights:  {p.source}\n          {p.url or 'timm / Hugging Face hub'}")
        scale = "none" if p.mean is None else f"(DN / {list(p.scale)} - {list(p.mean)}) / {list(p.std)}"
        print(f"inputs:   {scale}\nnotes:    {p.notes}")
    return 0


def parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``rayvit`` command: a subcommand per stage of the registry (:mod:`rayvit.stages`),
    whose options are built for the command ``argv`` names only (that imports its module
    alone), then ``run``, ``methods``, ``models`` and the commands plugged in through the
    ``rayvit.commands`` entry points (``bench``)."""
    from importlib.metadata import entry_points

    from .stages import STAGES

    p = argparse.ArgumentParser(prog="rayvit", description="Raster mosaics -> ViT feature maps on Ray, "
                                                           "and feature maps -> maps.")
    p.add_argument("--version", action="version", version=f"rayvit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for stage in STAGES.values():
        sp = sub.add_parser(stage.name, help=stage.help)
        if stage.name == chosen:
            stage.arguments(sp)
        sp.set_defaults(func=stage.run)
    add_run(sub)
    add_methods(sub)
    add_models(sub)
    for plugin in entry_points(group="rayvit.commands"):
        plugin.load()(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``rayvit`` command in this process and return its exit code (the console
    script exits with it). Callable again and again in one process: it joins the Ray this
    process is already connected to instead of starting its own, and leaves behind no state
    that changes the next call (see :func:`_call_state`)."""
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = parser(argv).parse_args(argv)
    except SystemExit as exc:           # --help, --version, or a usage error argparse printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    from .console import native_stderr_filter

    quiet_native = not getattr(args, "verbose", False) and sys.stderr is sys.__stderr__   # not when captured
    try:
        with _call_state(args), native_stderr_filter() if quiet_native else contextlib.nullcontext():
            return args.func(args)
    except RayvitError as exc:
        print(f"rayvit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rayvit {args.command}: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _call_state(args):
    """What one command sets for itself, and undoes when it ends:

    - ``--s3-endpoint`` as ``AWS_ENDPOINT_URL`` (every stage, and Ray workers started by
      this command, see it), restored afterwards;
    - ``--verbose`` (Ray's and GDAL's logs) for this command only;
    - each command starts with no cached filesystem (credentials are read from the
      environment when one is made) and no "warned once" memory, and ends with its cached
      raster handles closed (a file rewritten between two commands is read afresh).
    """
    import os

    from .console import reset_warnings, set_verbose, verbose
    from .io import mosaic, storage

    saved, was_verbose = os.environ.get("AWS_ENDPOINT_URL"), verbose()
    if getattr(args, "s3_endpoint", None):
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
    storage.clear_filesystems()
    reset_warnings()
    set_verbose(getattr(args, "verbose", False))
    try:
        yield
    finally:
        mosaic.close_cached()
        set_verbose(was_verbose)
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved


if __name__ == "__main__":
    sys.exit(main())
