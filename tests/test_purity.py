"""The decision core stays pure: no Flask, no HTTP, no files, no database, no clock.

This is what lets the engine be tested without an app and lets every
decision be replayed exactly (the evaluation date is always an argument).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE_PACKAGES = [ROOT / "cds_server" / "engine", ROOT / "fhir_mappings"]
FORBIDDEN_MODULES = {
    "flask",
    "werkzeug",
    "requests",
    "urllib",
    "http",
    "socket",
    "ssl",
    "sqlite3",
    "sqlalchemy",
    "psycopg",
    "redis",
    "subprocess",
    "os",
    "pathlib",
    "io",
    "shutil",
    "tempfile",
    "logging",
    "time",
    "random",
    "threading",
    "multiprocessing",
    "asyncio",
    "hooks",
}
FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval", "__import__"}
CLOCK_ATTRIBUTES = {"now", "today", "utcnow", "time", "monotonic", "perf_counter"}
MODULES = sorted(p for pkg in PURE_PACKAGES for p in pkg.rglob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(ROOT)) for p in MODULES])
def test_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not (_imports(tree) & FORBIDDEN_MODULES), f"{path.name} imports {_imports(tree) & FORBIDDEN_MODULES}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {node.func.id}()"
        if isinstance(node, ast.Attribute) and node.attr in CLOCK_ATTRIBUTES:
            assert not (isinstance(node.value, ast.Name) and node.value.id in {"date", "datetime", "time"}), (
                f"{path.name}:{node.lineno} reads the clock ({node.value.id}.{node.attr})"
            )


def test_the_check_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import flask\nfrom datetime import date\nx = date.today()\n")
    tree = ast.parse(bad.read_text())
    assert "flask" in _imports(tree)
    assert any(isinstance(n, ast.Attribute) and n.attr == "today" for n in ast.walk(tree))


def test_engine_names_no_guideline_content() -> None:
    """The engine never names a service, code, value set or drug: adding a CarePath is adding a file."""
    engine = ROOT / "cds_server" / "engine"
    words = ["neck", "mri", "facet", "epidural", "M54", "72141", "warfarin", "spine", "cervical"]
    for path in engine.rglob("*.py"):
        text = path.read_text(encoding="utf-8").lower()
        for word in words:
            assert word.lower() not in text, f"{path.name} mentions {word!r}"
