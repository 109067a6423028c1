"""Property-based tests: whatever arrives, the answer is JSON, never a 5xx, and every 4xx explains itself."""

from __future__ import annotations

import copy
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter

from cds_server.scenarios import SCENARIO_DIR, hook_request, iter_scenarios, load_scenario
from cds_server.web.app import create_app
from tests import conformance

NOW = datetime(2024, 3, 20, 15, 0, tzinfo=UTC)
APP = create_app(
    {
        "AUTH_REQUIRED": False,
        "CLOCK": lambda: NOW,
        "DATABASE_URL": f"sqlite:///{Path(tempfile.mkdtemp()) / 'prop.sqlite'}",
    }
)
CLIENT = APP.test_client()
VALID = hook_request(load_scenario(SCENARIO_DIR / "mri/met-failed-conservative-care.json"))
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

clean_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    clean_text,
    st.text(max_size=30),
)
clean_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), clean_text
)
clean_values = st.recursive(
    clean_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(clean_text, inner, max_size=4)),
    max_leaves=25,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=25,
)
FHIRISH_KEYS = st.sampled_from(
    [
        "resourceType",
        "id",
        "code",
        "coding",
        "system",
        "status",
        "subject",
        "reasonCode",
        "onsetDateTime",
        "performedDateTime",
        "valueQuantity",
        "value",
        "entry",
        "resource",
        "clinicalStatus",
        "extension",
        "url",
        "effectivePeriod",
        "start",
        "end",
        "item",
    ]
)


def check(response: Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert response.mimetype in ("application/json", "application/fhir+json")
    body = response.get_json()
    if response.status_code >= 400:
        assert conformance.check_outcome(body) == []


@SETTINGS
@given(body=json_values)
def test_any_json_body_to_any_hook(body: Any) -> None:
    for service in ("crd-order-sign", "crd-order-select", "crd-order-dispatch", "crd-appointment-book"):
        check(CLIENT.post(f"/cds-services/{service}", data=json.dumps(body), content_type="application/json"))


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_any_bytes(raw: bytes) -> None:
    check(CLIENT.post("/cds-services/crd-order-sign", data=raw, content_type="application/json"))
    check(CLIENT.post("/cds-services/crd-order-sign/feedback", data=raw, content_type="application/json"))
    check(CLIENT.post("/fhir/Questionnaire/$questionnaire-package", data=raw, content_type="application/fhir+json"))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


PATHS = [p for p in _paths(VALID) if p]


@SETTINGS
@given(path=st.sampled_from(PATHS), value=json_values)
def test_a_valid_request_with_one_value_replaced(path: tuple[Any, ...], value: Any) -> None:
    body = copy.deepcopy(VALID)
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    response = CLIENT.post("/cds-services/crd-order-sign", json=body)
    check(response)
    if response.status_code == 200:
        assert conformance.check_response(body, response.get_json()) == []


@SETTINGS
@given(
    resource=st.dictionaries(FHIRISH_KEYS, clean_values, max_size=8),
    kind=st.sampled_from(
        [
            "Condition",
            "Procedure",
            "Observation",
            "MedicationStatement",
            "AllergyIntolerance",
            "Device",
            "DiagnosticReport",
            "QuestionnaireResponse",
            "Encounter",
            "ImagingStudy",
        ]
    ),
)
def test_strange_history_resources_never_break_the_decision(resource: dict[str, Any], kind: str) -> None:
    body = copy.deepcopy(VALID)
    key = next(
        k
        for k, v in body["prefetch"].items()
        if isinstance(v, dict) and v.get("resourceType") == "Bundle" and k != "coverage"
    )
    body["prefetch"][key]["entry"].append({"resource": {**resource, "resourceType": kind}})
    response = CLIENT.post("/cds-services/crd-order-sign", json=body)
    check(response)
    assert response.status_code == 200, response.get_json()


class _NoNetwork(HTTPAdapter):
    """Every URL is prepared as for real, then refused: no DNS, no connection, in a property test."""

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        raise requests.ConnectionError("no network in property tests")


for _scheme in ("http://", "https://"):
    APP.extensions["cds"].session.mount(_scheme, _NoNetwork())

URL_PIECES = st.sampled_from(
    ["http://", "https://", "HTTP://", "ftp://", "//", "[", "]", "::1", "[::1", "127.0.0.1", "localhost", ":", ":99999"]
    + ["%", "%zz", "@", "user:pw@", "..", ".", "-", "#", "?", "/", "/fhir", " ", "\u2603", "xn--", "a" * 70, "\\"]
)
urls = st.one_of(
    st.lists(URL_PIECES, min_size=1, max_size=8).map("".join),
    st.builds(lambda a, b: a + b, st.sampled_from(["http://", "https://"]), st.text(max_size=40)),
)


@SETTINGS
@given(server=urls)
def test_any_fhir_server_url(server: str) -> None:
    """Malformed URLs (issue 11.4): a 400 or a technical answer, never a 500, whatever the URL."""
    body = copy.deepcopy(VALID)
    body["fhirServer"] = server
    body["prefetch"].pop("coverage", None)  # so the service must read it from fhirServer
    check(CLIENT.post("/cds-services/crd-order-sign", json=body))
    body["prefetch"] = {}
    check(CLIENT.post("/cds-services/crd-order-sign", json=body))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.sampled_from([0, 1, 50, 51, 500, 10_000]), dispatch=st.booleans())
def test_very_many_orders(count: int, dispatch: bool) -> None:
    """Very many orders (issue 11.3): within MAX_ORDERS_PER_CALL decided, beyond it a 413, never a 5xx."""
    body = copy.deepcopy(VALID)
    entries = body["context"]["draftOrders"]["entry"]
    template = entries[0]["resource"]
    entries[:] = [{"resource": {**template, "id": f"o-{i}"}} for i in range(count)]
    response = CLIENT.post("/cds-services/crd-order-sign", json=body)
    check(response)
    if count > int(APP.config["MAX_ORDERS_PER_CALL"]):
        assert response.status_code == 413
    if dispatch:  # the same count as references, in order-dispatch
        refs = {"hook": "order-dispatch", "dispatchedOrders": [f"ServiceRequest/o-{i}" for i in range(count)]}
        body["context"] = {**{k: v for k, v in body["context"].items() if k != "draftOrders"}, **refs}
        body["hook"] = "order-dispatch"
        check(CLIENT.post("/cds-services/crd-order-dispatch", json=body))


# --- real requests, each with one to three members replaced by a hostile value ---------------------------------

HOSTILE = st.one_of(
    st.sampled_from([None, True, 0, -1, 1e308, "", [], {}, [None], {"a": None}, "2024-13-45", "💥", 10**30]),
    st.sampled_from(["urn:uuid:x", {"reference": "Patient/x"}, {"coding": [{}]}, {"coding": [{"code": 5}]}]),
    st.text(max_size=20),
)
MUTATED_HOOKS = {
    "order-sign": "crd-order-sign",
    "order-select": "crd-order-select",
    "order-dispatch": "crd-order-dispatch",
    "appointment-book": "crd-appointment-book",
}
SEEDS = [hook_request(load_scenario(s.path)) for s in list(iter_scenarios())[::25]]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every member's path in a JSON value (iteratively: a mutated body may nest deep)."""
    found, stack = [], [(value, path)]
    while stack:
        node, at = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            found.append((*at, key))
            stack.append((child, (*at, key)))
    return found


@SETTINGS
@given(data=st.data())
def test_real_requests_with_hostile_members_are_answered_never_a_5xx(data: st.DataObject) -> None:
    """Deep inside a valid request (an order's status, a coding, a date) is where a type assumption hides:
    mutating real requests found a 500 (an order status sent as an object) that random JSON never reached."""
    body = copy.deepcopy(data.draw(st.sampled_from(SEEDS)))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(body)))
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = copy.deepcopy(data.draw(HOSTILE))  # a shared constant, mutated later, could become cyclic
    service = MUTATED_HOOKS.get(str(body.get("hook")), "crd-order-sign")
    check(CLIENT.post(f"/cds-services/{service}", data=json.dumps(body), content_type="application/json"))
