"""``rayvit run job.yaml``: a multi-step pipeline, validated up front, run step by step.

A job spec::

    name: unsupervised-map
    address: auto                 # optional: Ray address for every step
    steps:
      - id: features
        encode: {inputs: ["scene.tif"], output: out/features, model: vit_small_patch16_224}
      - id: pca
        reduce: {input: "${features.output}", output: out/pca, n_components: 3}
      - id: clusters
        cluster: {input: "${pca.output}", output: out/clusters, n_clusters: 8}

Each step names one stage of the registry (:mod:`rayvit.stages`: ``encode``, ``reduce``,
``cluster``, ``similarity``, ``classify``, ``table``, ``search``, ``change``, ``sample``) whose
fields are the keyword arguments of the Python function of that stage (``rayvit.encode``,
``rayvit.reduce``...). ``${ID.output}`` is the product a previous
step wrote (its raster: ``features.tif``/``features.gti.gpkg``, ``reduced.tif``...), ``${ID.model}`` its
model file, ``${ID.dir}`` its output directory. Before anything runs, every step is checked:
the stage exists, every field is one of the stage's and has the right type, required fields
are present and every reference points to an earlier step; errors name the step and field.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import sys
import time
import typing
from typing import Any, Callable

from . import report
from .errors import InputError
from .io.storage import is_local, local_path

REF = re.compile(r"\$\{([A-Za-z0-9_-]+)\.(output|model|dir)\}")
SPEC_KEYS = {"name", "address", "steps", "description", "report"}


def stages() -> dict[str, Callable]:
    """Every stage a step may name (:mod:`rayvit.stages`), as its Python function."""
    from .stages import STAGES
    return {name: stage.function() for name, stage in STAGES.items()}


def fields(stage: str) -> dict[str, tuple[Any, Any]]:
    """``{field: (type, default)}`` a step of ``stage`` accepts (default ``...``: required)."""
    fn = stages()[stage]
    hints = typing.get_type_hints(fn)
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or name in ("options", "progress"):
            continue
        required = p.default is p.empty or name == "output"    # encode's inputs may be --stac instead
        out[name] = (hints.get(name, Any), ... if required else p.default)
    if stage == "encode":
        from .encode.pipeline import EncodeOptions
        ehints = typing.get_type_hints(EncodeOptions)
        for f in dataclasses.fields(EncodeOptions):
            # by_date writes several products (rayvit.encode_dates); grid is set by it
            if f.name not in ("progress", "dry_run", "by_date", "grid"):
                out[f.name] = (ehints[f.name], f.default)
    return out


def load(path: str) -> dict:
    import yaml

    try:
        with open(path) as fh:
            spec = yaml.safe_load(fh)
    except FileNotFoundError:
        raise InputError(f"job spec {path!r} does not exist.") from None
    except yaml.YAMLError as exc:
        raise InputError(f"job spec {path!r} is not valid YAML: {exc}") from None
    return validate(spec, path)


def validate(spec: Any, path: str = "job") -> dict:
    """Check the whole spec before anything runs; returns it with defaults filled in."""
    import pydantic

    if not isinstance(spec, dict) or not isinstance(spec.get("steps"), list) or not spec["steps"]:
        raise InputError(f"{path}: a job spec is a mapping with a non-empty list 'steps' "
                         "(see jobs/README.md).")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise InputError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}; valid: "
                         f"{', '.join(sorted(SPEC_KEYS))}.")
    seen: list[str] = []
    for n, step in enumerate(spec["steps"], 1):
        where = f"{path}: step {n}"
        if not isinstance(step, dict):
            raise InputError(f"{where}: a step is a mapping like {{id: pca, reduce: {{...}}}}.")
        sid = step.get("id", f"step{n}")
        where = f"{path}: step {sid!r}"
        kinds = [k for k in step if k in stages()]
        extra = set(step) - set(stages()) - {"id"}
        if len(kinds) != 1 or extra:
            unknown_keys = f"; unknown: {', '.join(sorted(extra))}" if extra else ""
            raise InputError(f"{where}: needs exactly one stage among {', '.join(stages())} "
                             f"(found {', '.join(kinds) or 'none'}{unknown_keys}).")
        if sid in seen:
            raise InputError(f"{where}: id {sid!r} is used twice; ids must be unique.")
        stage = kinds[0]
        args = step[stage] or {}
        if not isinstance(args, dict):
            raise InputError(f"{where} ({stage}): its fields must be a mapping.")
        allowed = fields(stage)
        for key, value in args.items():
            if key not in allowed:
                raise InputError(f"{where} ({stage}): unknown field {key!r}; valid: {', '.join(allowed)}.")
            for ref in REF.findall(str(value)):
                if ref[0] not in seen:
                    raise InputError(f"{where} ({stage}): field {key!r} refers to ${{{ref[0]}.{ref[1]}}}, "
                                     f"but no earlier step has id {ref[0]!r} (earlier: {', '.join(seen) or 'none'}).")
            if REF.search(str(value)):
                continue          # resolved when the step runs
            try:
                pydantic.TypeAdapter(allowed[key][0]).validate_python(value, strict=False)
            except pydantic.ValidationError as exc:
                msg = exc.errors()[0]["msg"]
                raise InputError(f"{where} ({stage}): field {key!r} = {value!r}: {msg}.") from None
        missing = [k for k, (_, default) in allowed.items() if default is ... and k not in args]
        if missing:
            raise InputError(f"{where} ({stage}): missing required field(s) {', '.join(missing)}.")
        step["id"] = sid
        seen.append(sid)
    return spec


def _resolve(value, done: dict):
    if isinstance(value, str):
        whole = REF.fullmatch(value)
        if whole:
            return done[whole.group(1)][whole.group(2)]
        return REF.sub(lambda m: str(done[m.group(1)][m.group(2)]), value)
    if isinstance(value, list):
        return [_resolve(v, done) for v in value]
    return value


def run(path: str, dry_run: bool = False, address: str | None = None, progress: bool = True) -> dict:
    """Run every step of the job spec at ``path`` in order; returns ``{id: outputs}``."""
    spec = load(path)
    address = address or spec.get("address")
    steps = spec["steps"]
    if dry_run:
        for step in steps:
            stage = next(k for k in step if k in stages())
            print(f"step {step['id']}: {stage} " + ", ".join(f"{k}={v!r}" for k, v in (step[stage] or {}).items()))
        print(f"{len(steps)} steps valid; nothing run.")
        print("dry run: nothing written.")
        return {}
    from .stages import STAGES

    done: dict[str, dict] = {}
    reported = []
    for n, step in enumerate(steps, 1):
        stage = next(k for k in step if k in stages())
        args = {k: _resolve(v, done) for k, v in (step[stage] or {}).items()}
        args.setdefault("address", address)
        print(f"job {spec.get('name', path)}: step {n}/{len(steps)} {step['id']} ({stage}) ...",
              file=sys.stderr, flush=True)
        t0 = time.monotonic()
        result = stages()[stage](**args, progress=progress)
        output = result.output
        done[step["id"]] = {"output": output, "dir": str(args["output"]),
                            "model": getattr(result, "model_path", None)}
        print(f"job: step {step['id']} done in {time.monotonic() - t0:.1f} s: {result.summary()}", flush=True)
        if STAGES[stage].raster and is_local(output):
            product = os.path.splitext(os.path.basename(output))[0]
            reported.append((step["id"], stage, os.path.dirname(local_path(output)), product))
    if reported:
        where = report_path(spec, [d for _, _, d, _ in reported])
        report.write_job(where, spec.get("name", os.path.basename(path)), reported)
        print(f"job: report {where}", flush=True)
    return done


def report_path(spec: dict, outdirs: list[str]) -> str:
    """The job report: ``report`` of the spec, else ``report.html`` in the folder that holds
    every step's output (``<name>-report.html`` when that folder is a step's own)."""
    if spec.get("report"):
        return spec["report"]
    common = os.path.commonpath([os.path.abspath(d) for d in outdirs])
    name = "report.html"
    if any(os.path.abspath(d) == common for d in outdirs):
        name = f"{spec.get('name', 'job')}-report.html"
    path = os.path.join(common, name)
    try:
        return os.path.relpath(path)
    except FileNotFoundError:     # no current directory: a job's working_dir removed under it
        return path
