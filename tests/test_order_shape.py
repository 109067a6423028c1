"""The draft-order and Coverage shortcut never accepts what the FHIR models refuse.

``orders.validate_order`` skips ``fhir.resources`` for an order ``order_shape.surely_valid``
recognises. So "surely valid" must imply "the R4B model accepts it": this test mutates the
scenario library's draft orders at every element (odd values of every JSON type, strings with
odd whitespace, dates of every spelling, unknown and missing members) and, wherever the
shortcut says True, asks the model. It also keeps the shortcut useful: the library's plain
orders are recognised.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds_server.scenarios import EXEMPTIONS_NAME, SCENARIO_DIR, hook_request, load_scenario
from fhir_mappings.order_shape import surely_valid
from fhir_mappings.orders import InvalidOrderError, validate_order

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**31 - 1,
    2**31,
    10**17,
    10**18,
    10**5000,
    1.0,
    1.5,
    -0.0,
    1e-05,
    1e300,
    "",
    " ",
    "x",
    " x",
    "x ",
    "x  y",
    "x y",
    "\tx",
    "x\n",
    "\x0b",
    "x\x0by",
    "x\x1cy",
    "\u00a0",
    "x\u3000",
    "\u2028",
    "é",
    "\ud800",
    "x\x00",
    "x" * 65,
    "A-Za-z0.9",
    "2024-03-20",
    "2024-02-29",
    "2023-02-29",
    "2024-02-30",
    "2024-13-01",
    "2024-00-10",
    "1899-12-31",
    "0999-01-01",
    "2024",
    "2024-03",
    "2024-03-20T10:00:00Z",
    "2024-03-20T10:00:00",
    "2024-3-20",
    "20240320",
    "http://x.example/y",
    "urn:uuid:3f1d2c8e-0000-4000-8000-000000000000",
    "Patient/p-1",
    [],
    [None],
    [""],
    ["x"],
    [{}],
    [{"text": "x"}],
    [{"reference": "Patient/p"}],
    {},
    {"text": "x"},
    {"reference": "Patient/p"},
    {"coding": [{"code": "x"}]},
    {"value": 1},
    {"x": 1},
    {"extension": [{"url": "http://x", "valueString": "y"}]},
]
DELETE = object()


def library_orders() -> list[dict[str, Any]]:
    """The draft orders of every scenario, one of each member layout (the library repeats its shapes)."""
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted(SCENARIO_DIR.glob("*/**/*.json")):
        if path.name == EXEMPTIONS_NAME:
            continue
        for entry in hook_request(load_scenario(path))["context"]["draftOrders"]["entry"]:
            resource = entry["resource"]
            seen.setdefault(repr(sorted(_paths_of(resource))), resource)
    return list(seen.values())


def _paths_of(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths_of(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:2]):
            yield from _paths_of(item, (*path, index))


def mutations(order: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The order with each element (and each element's parent) replaced, removed or given an unknown member."""
    for path in list(_paths_of(order)):
        if not path:
            continue
        for value in [*ODD_VALUES, DELETE]:
            mutated = copy.deepcopy(order)
            parent = mutated
            for step in path[:-1]:
                parent = parent[step]
            if value is DELETE:
                if isinstance(parent, dict):
                    del parent[path[-1]]
                else:
                    parent.pop(path[-1])
            else:
                parent[path[-1]] = copy.deepcopy(value)
            yield mutated
        mutated = copy.deepcopy(order)
        parent = mutated
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict):
            parent["unknownMember"] = "x"
            yield mutated


def model_accepts(order: dict[str, Any]) -> bool:
    """The R4B model's verdict alone (what ``validate_order`` did before the shortcut)."""
    rtype = order.get("resourceType")
    module = importlib.import_module(f"fhir.resources.R4B.{str(rtype).lower()}")
    try:
        getattr(module, str(rtype)).model_validate(dict(order))
    except Exception:
        return False
    return True


def known_coverages() -> list[dict[str, Any]]:
    """The Coverages of the library, of the real clients' requests and of Inferno's fixtures, one per layout."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(SCENARIO_DIR.glob("*/**/*.json")):
        if path.name != EXEMPTIONS_NAME:
            for entry in (hook_request(load_scenario(path))["prefetch"].get("coverage") or {}).get("entry", []):
                found.setdefault(repr(sorted(_paths_of(entry["resource"]))), entry["resource"])
    for path in sorted(CONFORMANCE.glob("*/*.json")):
        for resource in _resources_in(json.loads(path.read_text())):
            if resource.get("resourceType") == "Coverage":
                plain = {k: v for k, v in resource.items() if k not in ("text", "meta")}
                found.setdefault(repr(sorted(_paths_of(plain))), plain)
                fixed = {**plain, "id": str(plain.get("id", "x")).replace("_", "-")}
                found.setdefault(repr(sorted(_paths_of(fixed))) + "fixed", fixed)
    return list(found.values())


def _resources_in(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if isinstance(value.get("resourceType"), str):
            yield value
        for item in value.values():
            yield from _resources_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _resources_in(item)


ORDERS = library_orders()
COVERAGES = known_coverages()


def test_the_library_s_plain_orders_are_recognised() -> None:
    plain = [o for o in ORDERS if "contained" not in o]  # those holding contained resources go to the model
    assert plain and all(surely_valid(o) for o in plain)
    assert all(model_accepts(o) for o in plain)


def test_the_known_plain_coverages_are_recognised() -> None:
    valid = [c for c in COVERAGES if model_accepts(c)]  # Inferno's example has an id with "_": not a FHIR id
    assert len(valid) >= 2 and all(surely_valid(c) for c in valid)
    assert not any(surely_valid(c) for c in COVERAGES if c not in valid)


@pytest.mark.parametrize("order", ORDERS + COVERAGES, ids=lambda o: f"{o.get('resourceType')}-{o.get('id')}")
def test_surely_valid_implies_the_model_accepts_on_every_mutation(order: dict[str, Any]) -> None:
    checked = recognised = 0
    for mutated in mutations(order):
        checked += 1
        if surely_valid(mutated):
            recognised += 1
            assert model_accepts(mutated), mutated
    assert checked > 500 and (recognised > 50 or not surely_valid(order))


def test_an_order_the_model_refuses_is_refused_with_the_model_s_words() -> None:
    order = copy.deepcopy(ORDERS[0])
    order["authoredOn"] = "2024-02-30"
    assert not surely_valid(order)
    with pytest.raises(InvalidOrderError, match="authoredOn"):
        validate_order(order)
