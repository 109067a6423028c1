"""The documentation cannot drift from the code: generated pages are current, cited tests exist, examples are valid.

- ``docs/carepath-schema.md`` is exactly what ``cds_server/tools/schema_doc.py`` generates now;
- every ``tests/<file>.py::<test>`` these pages cite exists; every ``conformance.<helper>`` that
  ``docs/conformance.md`` names exists, every checklist rule appears there once, and its summary adds up;
- every JSON fragment of ``docs/authoring-a-carepath.md`` is valid CarePath data (and equal to
  the fixture it quotes), and its operator list is the registry's;
- ``docs/connecting-an-ehr.md`` lists the prefetch templates, services and options in force;
- links between these pages resolve, and the README links to them.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cds_server.carepath_store import DEFAULT_CAREPATHS, load_schema
from cds_server.engine.operators import REGISTRY
from cds_server.pipeline.discovery import CONFIGURATION_OPTIONS
from cds_server.pipeline.prefetch import TEMPLATES
from cds_server.tools import schema_doc
from hooks import SERVICES
from tests import conformance

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = ROOT.parent / "shared" / "reference" / "cds-hooks-crd.md"
OWN_PAGES = (
    "architecture.md",
    "connecting-an-ehr.md",
    "authoring-a-carepath.md",
    "carepath-schema.md",
    "conformance.md",
)
STATUSES = ("met", "partly", "not met", "not applicable")
TEST_REF = re.compile(r"\b(tests/[\w/]+\.py)::(\w+)(\[[^\]]*\])?")
ROW = re.compile(r"^\| (\d+) \| ([EW]) \| .+? \| (met|partly|not met|not applicable) \| .+ \|$", re.M)
FRAGMENT = re.compile(r"<!-- carepath-fragment ([^>]*?) ?-->\n```json\n(.*?)```", re.S)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


# --- the generated schema reference ------------------------------------------------------------


def test_the_schema_reference_is_what_the_generator_writes() -> None:
    assert schema_doc.generate() == read("carepath-schema.md"), (
        "docs/carepath-schema.md is stale: run .venv/bin/python -m cds_server.tools.schema_doc"
    )


def test_the_generator_refuses_a_keyword_it_cannot_show() -> None:
    schema = {**load_schema(), "$defs": {"odd": {"type": "string", "format": "uri"}}}
    with pytest.raises(ValueError, match="#/\\$defs/odd: schema_doc cannot render format"):
        schema_doc.render(schema, REGISTRY)


def test_the_generator_writes_then_reports_up_to_date(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "docs" / "carepath-schema.md"
    target.parent.mkdir()
    monkeypatch.setattr(schema_doc, "ROOT", tmp_path)
    monkeypatch.setattr(schema_doc, "DOC_PATH", target)
    assert schema_doc.main(["--check"]) == 1, "a missing page is stale"
    assert schema_doc.main([]) == 0 and target.read_text(encoding="utf-8") == schema_doc.generate()
    assert schema_doc.main(["--check"]) == 0
    assert schema_doc.main(["--bogus"]) == 2


# --- the conformance statement -----------------------------------------------------------------


def _defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


@pytest.mark.parametrize("page", OWN_PAGES)
def test_every_test_a_page_cites_exists(page: str) -> None:
    refs = TEST_REF.findall(read(page))
    if page == "conformance.md":
        assert len(refs) > 100, "the statement cites its evidence"
    missing = []
    for file, name, _ in refs:
        path = ROOT / file
        if not path.exists() or name not in _defined_tests(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/{page} cites tests that do not exist: " + ", ".join(sorted(set(missing)))


def test_every_conformance_helper_the_statement_names_exists() -> None:
    names = set(re.findall(r"`conformance\.(\w+)`", read("conformance.md")))
    assert names, "the statement names the helpers that implement the checklist"
    assert not [n for n in names if not callable(getattr(conformance, n, None))]


def _rows() -> list[tuple[int, str, str]]:
    return [(int(n), level, status) for n, level, status in ROW.findall(read("conformance.md"))]


def _checklist() -> dict[int, str]:
    """Rule number -> level, from section 7 of the shared reference."""
    text = REFERENCE.read_text(encoding="utf-8").split("## 7.", 1)[1]
    return {int(n): level for n, level in re.findall(r"^(\d+)\. \[([EW])\]", text, flags=re.M)}


def test_the_statement_covers_every_checklist_rule_once() -> None:
    rows = _rows()
    numbers = [n for n, _, _ in rows]
    repeated = sorted(n for n, c in Counter(numbers).items() if c > 1)
    assert not repeated, f"rules stated twice: {repeated}"
    assert numbers == list(range(1, len(numbers) + 1)), "rules are numbered 1..N in order"
    if not REFERENCE.exists():
        pytest.skip("shared/reference not beside the checkout: the rule list cannot be compared")
    assert {n: level for n, level, _ in rows} == _checklist(), "numbers and levels follow cds-hooks-crd.md §7"


def test_the_summary_adds_up() -> None:
    stated = {
        s: int(n)
        for s, n in re.findall(r"^\| (met|partly|not met|not applicable) \| (\d+) \|$", read("conformance.md"), re.M)
    }
    counted = Counter(status for _, _, status in _rows())
    assert stated == {s: counted.get(s, 0) for s in STATUSES}


# --- the authoring guide ------------------------------------------------------------------------


def _fragments() -> list[tuple[dict[str, str], Any]]:
    found = []
    for attrs, body in FRAGMENT.findall(read("authoring-a-carepath.md")):
        found.append((dict(re.findall(r'(\w+)="([^"]*)"', attrs)), json.loads(body)))
    return found


FRAGMENTS = _fragments()


def _pointer(document: Any, pointer: str) -> Any:
    """Resolve a JSON Pointer (RFC 6901)."""
    for token in pointer.lstrip("/").split("/") if pointer.strip("/") else []:
        token = token.replace("~1", "/").replace("~0", "~")
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


def _leaves(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if isinstance(value.get("op"), str) and "id" in value:
            yield value
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)


def _parameter_values() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in (*DEFAULT_CAREPATHS, ROOT / "tests" / "fixtures" / "knee-injection-mini.json"):
        values |= {k: v["value"] for k, v in json.loads(path.read_text(encoding="utf-8"))["parameters"].items()}
    return values


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"param"}:
            return parameters[value["param"]]
        return {k: _resolve(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, parameters) for v in value]
    return value


def test_every_json_block_of_the_authoring_guide_is_a_marked_fragment() -> None:
    text = read("authoring-a-carepath.md")
    assert text.count("```json") == len(FRAGMENTS) >= 8


@pytest.mark.parametrize(
    ("attrs", "fragment"),
    FRAGMENTS,
    ids=[f"{i}:{attrs.get('at') or attrs.get('schema')}" for i, (attrs, _) in enumerate(FRAGMENTS)],
)
def test_carepath_fragments_in_the_authoring_guide_are_valid(attrs: dict[str, str], fragment: Any) -> None:
    schema = load_schema()  # embedded under its own $id, so its internal references resolve inside it
    wrapper = {"$schema": schema["$schema"], "$defs": {"carepath": schema}, "$ref": schema["$id"] + attrs["schema"]}
    validator = jsonschema.Draft202012Validator(wrapper)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(fragment)]
    assert not errors, errors
    parameters = _parameter_values()
    for leaf in _leaves(fragment):
        assert leaf["op"] in REGISTRY, f"{leaf['id']}: unknown operator {leaf['op']}"
        args = _resolve(leaf.get("args") or {}, parameters)
        problems = [e.message for e in jsonschema.Draft202012Validator(REGISTRY[leaf["op"]].schema).iter_errors(args)]
        assert not problems, f"{leaf['id']}: {problems}"
    if "source" in attrs:
        quoted = json.loads((ROOT / attrs["source"]).read_text(encoding="utf-8"))
        assert fragment == _pointer(quoted, attrs["at"]), f"differs from {attrs['source']} at {attrs['at']}"


def test_the_authoring_guide_lists_every_operator() -> None:
    block = read("authoring-a-carepath.md").split("<!-- operator-list -->", 1)[1].split("<!-- /operator-list -->")[0]
    assert set(re.findall(r"`(\w+)`", block)) == set(REGISTRY)


# --- the connection guide -----------------------------------------------------------------------


def test_the_connection_guide_lists_what_discovery_offers() -> None:
    text = read("connecting-an-ehr.md")
    for key, template in TEMPLATES.items():
        assert f"| `{key}` | `{template}` |" in text, f"prefetch {key} missing or different"
    for service_id, service in SERVICES.items():
        assert f"| `{service_id}` | `{service.hook}` |" in text, service_id
    for option in CONFIGURATION_OPTIONS:
        assert f"| `{option['code']}` | {option['type']} | `{json.dumps(option['default'])}` |" in text, option["code"]


# --- links --------------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    return ids | {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", OWN_PAGES)
def test_links_from_the_page_resolve(page: str) -> None:
    source = DOCS / page
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", source.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (source.parent / file).resolve() if file else source
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in _anchors(path)):
            broken.append(target)
    assert not broken, f"{page}: broken links {broken}"


def test_the_readme_links_to_these_pages() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not [page for page in OWN_PAGES if f"(docs/{page})" not in readme]


def _requirements(name: str) -> dict[str, str]:
    """Package (with extras) → pinned version, from a requirements file."""
    pins = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            package, _, version = line.partition("==")
            pins[package.strip()] = version.strip()
    return pins


def test_every_runtime_requirement_is_explained() -> None:
    """docs/dependencies.md lists every package of requirements.txt and requirements-dev.txt, at its pin."""
    rows = dict(re.findall(r"^\| (\S+) (\S+) \| .+ \|$", read("dependencies.md"), flags=re.M))
    assert rows == {**_requirements("requirements.txt"), **_requirements("requirements-dev.txt")}
