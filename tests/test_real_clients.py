"""Requests captured from the clients integrators try first (../shared/conformance/real-clients/).

The CDS Hooks sandbox's PAMA tab sends ``"code": {"coding": [{}]}`` and ``"reasonCode": []`` before a
field is picked; the Da Vinci CRD request generator sends ``fhirAuthorization.access_token: ""`` when
no auth server is configured. Those empty values are read as absent (a warning names the element),
so each capture gets a decision; what cannot be read (``null``, a missing member) is still a 400.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_server.app import create_app
from cds_server.invoke import drop_empty_values
from tests import conformance
from tests.conftest import FhirTestServer

CAPTURED = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "real-clients"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
SERVICE = {"order-sign": "crd-order-sign", "order-select": "crd-order-select"}
SANDBOX = [
    "sandbox-order-sign-request.json",
    "sandbox-pama-order-select-empty-values.json",
    "sandbox-pama-order-select-no-reason-yet.json",
]
CRDGEN = "crdgen-order-sign-request.json"


def captured(name: str) -> dict[str, Any]:
    path = CAPTURED / name
    if not path.exists():
        pytest.skip(f"the captured requests are not here: {CAPTURED}")
    body: dict[str, Any] = json.loads(path.read_text())
    return body


def offline(body: dict[str, Any]) -> dict[str, Any]:
    """The capture without the FHIR server of its run (not there any more): its prefetch only."""
    body = copy.deepcopy(body)
    body.pop("fhirServer", None)
    body.pop("fhirAuthorization", None)
    return body


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(
        {
            "AUTH_REQUIRED": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'real-clients.sqlite'}",
            "CLOCK": lambda: datetime(2024, 6, 20, 15, 0, tzinfo=UTC),
        }
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post(f"/cds-services/{SERVICE[body['hook']]}", json=body)
    return response.status_code, response.get_json()


def coverage_information(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The coverage information of each updated order, by ``Type/id``."""
    out = {}
    for action in payload.get("systemActions") or []:
        resource = action["resource"]
        (ext,) = [e for e in resource.get("extension", []) if e["url"] == EXT]
        values = {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}
        out[f"{resource['resourceType']}/{resource['id']}"] = values
    return out


def draft_orders(body: dict[str, Any]) -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in body["context"]["draftOrders"]["entry"]]


def assert_decided(body: dict[str, Any], status: int, payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """200, a conformant answer, and coverage information for every draft order."""
    assert status == 200, payload
    assert conformance.check_response(body, payload) == []
    info = coverage_information(payload)
    assert sorted(info) == sorted(draft_orders(body)), "one coverage-information update per order"
    return info


@pytest.mark.parametrize("name", SANDBOX)
def test_each_sandbox_capture_gets_a_decision(client: FlaskClient, name: str) -> None:
    body = offline(captured(name))
    status, payload = post(client, body)
    for values in assert_decided(body, status, payload).values():
        assert values["pa-needed"] in {"no-auth", "auth-needed", "satisfied", "conditional"}


def test_the_sandbox_order_before_a_study_is_picked_is_conditional_never_no_auth_nor_approved(
    client: FlaskClient,
) -> None:
    """Fail closed: with its empty code dropped, the order has no billing code and names no service."""
    body = offline(captured("sandbox-pama-order-select-empty-values.json"))
    status, payload = post(client, body)
    (info,) = assert_decided(body, status, payload).values()
    assert info["pa-needed"] == "conditional"
    assert "satisfied-pa-id" not in info
    assert "PA-" not in json.dumps(payload)
    (action,) = payload["systemActions"]
    assert "code" not in action["resource"] and "reasonCode" not in action["resource"], "no empty values sent back"


def test_empty_values_are_logged_by_element_never_by_value(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = offline(captured("sandbox-pama-order-select-empty-values.json"))
    body["context"]["draftOrders"]["entry"][0]["resource"]["note"] = [{"text": "", "authorString": "Dr Who"}]
    with caplog.at_level(logging.WARNING, logger="cds_server.invoke"):
        status, _ = post(client, body)
    assert status == 200
    (record,) = [r for r in caplog.records if "read as absent" in r.getMessage()]
    message = record.getMessage()
    where = "$.context.draftOrders.entry[0].resource"
    for element in ("code.coding[0]", "reasonCode", "note[0].text"):
        assert f"{where}.{element}" in message
    assert "Dr Who" not in message


def test_an_empty_access_token_is_no_token() -> None:
    body = captured(CRDGEN)
    kept = drop_empty_values(body)
    assert "fhirAuthorization" not in kept and kept["fhirServer"] == body["fhirServer"]
    assert body["fhirAuthorization"]["access_token"] == "", "the request itself is left as it came"


def test_a_request_without_empty_values_is_left_alone() -> None:
    body = json.loads((EXAMPLES / "order-sign-mri.json").read_text())
    assert drop_empty_values(body) is body


@pytest.mark.parametrize(
    ("change", "element"),
    [
        (lambda o: o.update(code=None), "code"),
        (lambda o: o.update(intent=""), "intent"),
        (lambda o: o.update(status=""), "status"),
    ],
    ids=["null", "required-intent-empty", "required-status-empty"],
)
def test_what_cannot_be_read_is_still_a_400(client: FlaskClient, change: Any, element: str) -> None:
    body = offline(captured("sandbox-order-sign-request.json"))
    change(body["context"]["draftOrders"]["entry"][0]["resource"])
    status, payload = post(client, body)
    assert status == 400, payload
    assert conformance.check_outcome(payload) == []
    (issue,) = payload["issue"]
    assert issue["expression"][0].startswith("$.context.draftOrders")
    assert element in issue["expression"][0] + issue["diagnostics"], "the answer names the element"


def test_a_token_with_an_empty_type_is_still_a_400(client: FlaskClient) -> None:
    body = captured("sandbox-order-sign-request.json")
    body["fhirAuthorization"] = {
        "access_token": "abc",
        "token_type": "",
        "expires_in": 30,
        "scope": "user/*.read",
        "subject": "cds",
    }
    status, payload = post(client, body)
    assert status == 400
    assert "token_type" in json.dumps(payload)


def test_the_crd_request_generator_capture_gets_a_decision_from_a_server_without_tokens(
    client: FlaskClient, open_fhir_server: FhirTestServer
) -> None:
    """Its prefetch keys are its own, so the record comes from the FHIR server, as in the captured run:
    a local server with the record of examples/order-sign-mri.json and no auth server. The empty token
    is not sent."""
    example = json.loads((EXAMPLES / "order-sign-mri.json").read_text())
    resources: dict[str, dict[str, Any]] = {}
    for value in example["prefetch"].values():
        for resource in [value, *[e["resource"] for e in (value or {}).get("entry", [])]]:
            if resource and resource.get("resourceType") != "Bundle":
                resources[f"{resource['resourceType']}/{resource['id']}"] = resource
    open_fhir_server.load(list(resources.values()))
    open_fhir_server.reset_log()
    body = captured(CRDGEN)
    body["fhirServer"] = open_fhir_server.base
    assert body["fhirAuthorization"]["access_token"] == ""
    status, payload = post(client, body)
    (info,) = assert_decided(drop_empty_values(body), status, payload).values()
    assert info["pa-needed"] != "no-auth", "a cervical MRI for neck pain is in the CarePath"
    seen = open_fhir_server.requests_seen()
    assert seen and all(r["authorization"] is None for r in seen), "no (empty) bearer token is sent"


def test_the_crd_request_generator_capture_without_its_server_is_412_not_400(client: FlaskClient) -> None:
    """Its own prefetch keys hold no history: without the FHIR server the data is missing, not unreadable."""
    status, payload = post(client, offline(captured(CRDGEN)))
    assert status == 412, payload
    assert conformance.check_outcome(payload) == []
