"""Imports point down: the core reaches for nothing above it, and the module pairs that once
imported each other (core/autotune <-> fast, drafters/registry <-> shipped, evaluation
runner <-> report) import one way only. Read from the source, type-only imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vlmspec"
CORE_MAY_USE = {"core", "atomic", "errors"}  # below or beside the core


def imported_modules(path: Path) -> set[str]:
    """Absolute dotted names of the vlmspec modules `path` imports (relative ones resolved)."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]  # ("vlmspec", "core")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vlmspec")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ((node.module,) if node.module else ()))
            else:
                name = node.module or ""
            if name.startswith("vlmspec"):
                out.add(name)
                out |= {f"{name}.{a.name}" for a in node.names}
    return out


def test_the_core_imports_nothing_above_it():
    offenders = {}
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        above = {m for m in imported_modules(path) if m.split(".")[1] not in CORE_MAY_USE}
        above = {m for m in above if m.count(".") >= 1 and m.split(".")[1] not in CORE_MAY_USE}
        if above:
            offenders[path.name] = sorted(above)
    assert not offenders, offenders


@pytest.mark.parametrize("lower, upper", [
    ("core/autotune.py", "vlmspec.fast"),
    ("drafters/shipped.py", "vlmspec.drafters.registry"),
    ("evaluation/report.py", "vlmspec.evaluation.runner"),
])
def test_former_cycles_point_one_way(lower, upper):
    imported = imported_modules(PACKAGE / lower)
    assert not {m for m in imported if m == upper or m.startswith(upper + ".")}, (lower, upper)
