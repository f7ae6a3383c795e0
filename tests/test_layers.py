"""Imports point one way: grid <- io <- report <- encode / analysis <- the command, with the
benchmarks on top (the product never imports them); encode and analysis do not import each
other; Ray is imported only where tasks or actors are made. Read from the source (every
import statement, also those inside functions), so a forbidden import fails here."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "rayvit"
LAYERS = [                                   # a module imports its own layer or lower ones
    {"errors", "console", "grid", "options", "version"},
    {"io"},
    {"report", "runtime"},
    {"encode", "analysis", "landscape"},
    {"", "stages", "job", "cli"},            # "": the package (its __init__, __version__)
    {"bench"},
]
SIBLINGS = [{"encode", "analysis"}]           # same layer, and still not each other
RAY = ["runtime", "analysis.source", "encode.pipeline", "encode.stages.", "io.writer", "bench."]


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        name = ".".join(p for p in parts if p != "__init__")
        yield name, package, ast.parse(path.read_text())


def imports(package: tuple, tree) -> list[tuple[str, int]]:
    """``(imported module relative to rayvit, or 'ray'/other top-level, line)``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.removeprefix("rayvit.") if a.name.startswith("rayvit") else "!" + a.name, node.lineno)
                     for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - node.level + 1])
                if node.module:
                    out.append((".".join(base + [node.module]), node.lineno))
                else:                       # from .. import report: the module named
                    out += [(".".join(base + [a.name]), node.lineno) for a in node.names]
            elif node.module.startswith("rayvit"):
                out.append((node.module.removeprefix("rayvit").lstrip("."), node.lineno))
            else:
                out.append(("!" + node.module, node.lineno))
    return out


def layer(name: str) -> tuple[int, str]:
    top = name.split(".")[0]
    return next(i for i, group in enumerate(LAYERS) if top in group), top


@pytest.mark.parametrize("name, package, tree", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_point_down_and_ray_only_where_tasks_are_made(name, package, tree):
    mine, top = layer(name)
    for target, line in imports(package, tree):
        if target.startswith("!"):
            if target[1:].split(".")[0] == "ray":
                assert any(name == r or name.startswith(r) for r in RAY if r.endswith(".")) or name in RAY, \
                    f"rayvit.{name}:{line} imports Ray, which only modules that make tasks or actors do"
            continue
        theirs, other = layer(target)
        assert theirs <= mine, f"rayvit.{name}:{line} imports rayvit.{target}, a layer above it"
        assert not any({top, other} == pair for pair in SIBLINGS), \
            f"rayvit.{name}:{line} imports rayvit.{target}: encode and analysis do not import each other"
