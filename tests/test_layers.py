"""The packages keep their places: imports flow one way, and no module imports itself back.

The layout is the architecture (docs/architecture.md): ``tools`` on top, then the
Flask surface (``web``), the stages of a hook call (``pipeline``), persistence
(``records``), the shared core modules of ``cds_server``, the pure ``engine``,
and at the bottom ``fhir_mappings`` and the ``hooks`` registry. A lower layer
importing a higher one (even inside a function, the usual way a cycle is hidden)
fails here, and so does any cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cds_server", "fhir_mappings", "hooks")

# Which layers each layer may import (besides itself). Anything else is a violation.
ALLOWED: dict[str, set[str]] = {
    "fhir_mappings": set(),
    "hooks": {"fhir_mappings"},
    "engine": {"fhir_mappings"},
    "core": {"engine", "fhir_mappings"},
    "records": {"core", "fhir_mappings"},
    "pipeline": {"records", "core", "engine", "fhir_mappings", "hooks"},
    "web": {"pipeline", "records", "core", "engine", "fhir_mappings", "hooks"},
    "tools": {"web", "pipeline", "records", "core", "engine", "fhir_mappings", "hooks"},
    "entry": {"tools", "web", "core"},  # cds_server/__main__.py
}
SUBPACKAGES = {"engine", "records", "pipeline", "web", "tools"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def layer(module: str) -> str:
    """The layer a module belongs to, from its dotted name."""
    parts = module.split(".")
    if parts[0] != "cds_server":
        return parts[0]
    if len(parts) == 1:
        return "core"
    if parts[1] == "__main__":
        return "entry"
    return parts[1] if parts[1] in SUBPACKAGES else "core"


def _resolve(name: str) -> str | None:
    """The project module an import names (a submodule named by ``from package import module`` included)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (annotations only: never imported at run time)."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        if _type_checking(node):
            stack.extend(node.orelse)  # type: ignore[attr-defined]
        else:
            stack.extend(ast.iter_child_nodes(node))
    return found


def imports_of(module: str) -> set[str]:
    """Every project module ``module`` imports, at any depth of its code."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    resolved = {_resolve(name) for name in names if name.split(".")[0] in PACKAGES}
    return {name for name in resolved if name and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_layers_are_known() -> None:
    assert {layer(m) for m in MODULES} <= set(ALLOWED), "a module outside the known layers"
    for package in SUBPACKAGES:
        assert f"cds_server.{package}" in MODULES, f"cds_server/{package}/__init__.py is missing"
        assert ast.get_docstring(ast.parse(MODULES[f"cds_server.{package}"].read_text())), package


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_downward(module: str) -> None:
    own = layer(module)
    wrong = sorted(
        f"{target} ({layer(target)})"
        for target in GRAPH[module]
        if layer(target) != own and layer(target) not in ALLOWED[own] and not (own != "core" and target == "cds_server")
    )
    assert not wrong, f"{module} ({own}) may not import {', '.join(wrong)}"


def _cycle() -> list[str] | None:
    """One import cycle among the project's modules, or None (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for start in sorted(GRAPH):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(GRAPH[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(GRAPH[nxt])))
    return None


def _package_parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycles() -> None:
    # A package's __init__ importing its own submodules (re-exports) is not a cycle.
    for module in GRAPH:
        GRAPH[module] -= _package_parents(module)
    assert _cycle() is None, f"import cycle: {' -> '.join(_cycle() or [])}"


def test_layer_of_names() -> None:
    assert layer("cds_server.web.api") == "web"
    assert layer("cds_server.config") == "core"
    assert layer("cds_server.engine.facts") == "engine"
    assert _resolve("cds_server.pipeline.cards.decision_card") == "cds_server.pipeline.cards"
