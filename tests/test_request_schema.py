"""The compiled envelope and context validators never accept what jsonschema refuses.

``request_schema.check`` asks the compiled validator (fastjsonschema) first and walks the
instance with jsonschema only when it does not conform. So every verdict must be the one
jsonschema alone would give; this test mutates real requests of every hook at every member
the schemas constrain, and compares.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from cds_server.errors import InvalidRequest
from cds_server.pipeline import request_schema
from cds_server.scenarios import SCENARIO_DIR, hook_request, load_scenario
from hooks import SERVICES

ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.0,
    1.5,
    "",
    "x",
    "x\n",
    "Bearer",
    "https://ehr.example/fhir",
    "https://ehr.example/fhir\n",
    "3f1d2c8e-0000-4000-8000-000000000000",
    "3f1d2c8e-0000-4000-8000-000000000000\n",
    "Practitioner/p-1",
    "p-1",
    [],
    [{}],
    {},
    {"resourceType": 1},
    {"resourceType": "Bundle"},
]


def requests_of_every_hook() -> list[dict[str, Any]]:
    scenario = load_scenario(SCENARIO_DIR / "mri" / "met-failed-conservative-care.json")
    sign = hook_request(scenario)
    sign["fhirServer"] = "https://ehr.example/fhir"
    sign["fhirAuthorization"] = {
        "access_token": "t",
        "token_type": "Bearer",
        "expires_in": 30,
        "scope": "user/*.read",
        "subject": "cds",
    }
    sign["extension"] = {"davinci-crd.configuration": {"coverage-info": True}}
    dispatch = copy.deepcopy(sign) | {"hook": "order-dispatch"}
    dispatch["context"] = {
        "patientId": "p-1",
        "dispatchedOrders": ["ServiceRequest/sr-1"],
        "performer": "Organization/o",
    }
    return [sign, hook_request(scenario, hook="order-select"), dispatch]


def paths(value: Any, path: tuple[Any, ...] = (), depth: int = 5) -> Iterator[tuple[Any, ...]]:
    """Every member and item down to ``depth`` (the prefetch's resources are not walked past their type)."""
    yield path
    if depth == 0 or path[:1] == ("prefetch",) and len(path) >= 3:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*path, key), depth - 1)
    elif isinstance(value, list):
        for index, item in enumerate(value[:2]):
            yield from paths(item, (*path, index), depth - 1)


def mutations(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path in list(paths(body)):
        if not path:
            continue
        for value in [*ODD_VALUES, DELETE]:
            mutated = copy.deepcopy(body)
            parent = mutated
            for step in path[:-1]:
                parent = parent[step]
            if value is DELETE:
                if isinstance(parent, dict):
                    del parent[path[-1]]
            else:
                parent[path[-1]] = value
            yield mutated


DELETE = object()


def verdict(instance: Any, schema: Any) -> list[tuple[str, str]] | None:
    try:
        request_schema.check(instance, schema, "$", "x")
    except InvalidRequest as exc:
        return [(issue.message, issue.location) for issue in exc.issues]
    return None


def jsonschema_verdict(instance: Any, schema: Any) -> list[tuple[str, str]] | None:
    validator = request_schema._validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))[:20]
    issues = [
        (
            request_schema._message(e),
            "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path),
        )
        for e in errors
    ]
    return issues or None


@pytest.mark.parametrize("body", requests_of_every_hook(), ids=lambda b: b["hook"])
def test_the_compiled_validators_agree_with_jsonschema_on_every_mutation(body: dict[str, Any]) -> None:
    service = next(s for s in SERVICES.values() if s.hook == body["hook"])
    checked = 0
    for mutated in mutations(body):
        assert verdict(mutated, request_schema.ENVELOPE) == jsonschema_verdict(mutated, request_schema.ENVELOPE)
        context = mutated.get("context")
        assert verdict(context, service.context_schema) == jsonschema_verdict(context, service.context_schema)
        checked += 1
    assert checked > 500
