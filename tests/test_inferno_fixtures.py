"""The Inferno CRD test kit's own fixtures: our checkers accept its valid examples, our service its requests.

Two things are proven here. First, the conformance checkers in ``tests/conformance.py``
(which every service test runs on every response) agree with Inferno about what a valid
card and coverage-information action look like, and catch each violation we plant.
Second, the hook requests Inferno sends reach a proper answer from the service, never a 5xx.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_server.web.app import create_app
from tests import conformance

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "inferno-crd-fixtures"
pytestmark = pytest.mark.skipif(not FIXTURES.exists(), reason="shared/conformance not beside the checkout")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def card_problems(card: dict[str, Any]) -> list[str]:
    return conformance.check_card(card, "card") + conformance.check_card_kind(card, "card")


def with_uuids(card: dict[str, Any]) -> dict[str, Any]:
    """Inferno's templates leave suggestion uuids out; CRD ``resp-3`` requires them, and so do we."""
    card = copy.deepcopy(card)
    card.setdefault("uuid", "00000000-0000-4000-8000-000000000001")
    for n, suggestion in enumerate(card.get("suggestions") or []):
        suggestion.setdefault("uuid", f"00000000-0000-4000-8000-1000000000{n:02d}")
    return card


# --- the checkers agree with Inferno's valid examples ------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["propose_alternate_request.json", "companions_prerequisites.json", "instructions.json", "external_reference.json"],
)
def test_inferno_response_type_examples_pass_our_card_checks(name: str) -> None:
    card = fixture(name)
    assert card_problems(with_uuids(card)) == []
    if card.get("suggestions"):
        assert any("uuid" in p for p in card_problems(card)), "a suggestion without uuid breaks CRD resp-3"


def test_inferno_valid_cards_pass_our_card_checks() -> None:
    for i, card in enumerate(fixture("valid_cards.json")):
        assert card_problems(with_uuids(card)) == [], i


@pytest.mark.parametrize(
    "name", ["coverage_info_system_action_covered.json", "coverage_info_system_action_conditional.json"]
)
def test_inferno_coverage_information_actions_pass_our_checks(name: str) -> None:
    action = fixture(name)
    assert action["type"] == "update" and action["resource"]["resourceType"] in conformance.CRD_TYPES
    for ext in action["resource"]["extension"]:
        if ext["url"] == conformance.EXT:
            assert conformance.check_coverage_information(ext, "order-sign", "ext") == []


# --- and catch what we plant ------------------------------------------------------------------------


def _alternate() -> dict[str, Any]:
    return with_uuids(fixture("propose_alternate_request.json"))


def test_an_alternate_request_mixing_update_and_create_is_caught() -> None:
    card = _alternate()
    order = {"resourceType": "ServiceRequest", "id": "a"}
    delete = {"type": "delete", "description": "drop", "resourceId": "ServiceRequest/a"}
    create = {"type": "create", "description": "add", "resource": order | {"id": "b"}}
    card["suggestions"][0]["actions"] = [delete, create]
    assert card_problems(card) == [], "one delete plus one create is a proper alternate"
    card["suggestions"][0]["actions"] = [{"type": "update", "description": "x", "resource": order}, create]
    assert any("rule 94" in p for p in card_problems(card))


def test_an_additional_order_with_a_resource_id_is_caught() -> None:
    card = with_uuids(fixture("companions_prerequisites.json"))
    card["suggestions"][0]["actions"][0]["resourceId"] = "ServiceRequest/x"
    assert any("rule 95" in p for p in card_problems(card))


def test_an_instructions_card_without_detail_is_caught() -> None:
    card = fixture("instructions.json") | {"uuid": "u"}
    del card["detail"]
    assert any("rule 93" in p for p in card_problems(card))


def test_a_coverage_reference_to_none_is_caught() -> None:
    action = fixture("coverage_info_system_action_covered.json")
    ext = next(e for e in action["resource"]["extension"] if e["url"] == conformance.EXT)
    part = next(p for p in ext["extension"] if p["url"] == "coverage")
    part["valueReference"] = {"reference": "Coverage/None"}
    assert any("coverage reference" in p for p in conformance.check_coverage_information(ext, "order-sign", "e"))


def _two_orders_request() -> dict[str, Any]:
    order = {"resourceType": "ServiceRequest", "id": "a", "status": "draft", "intent": "order", "subject": {}}
    return {
        "hook": "order-sign",
        "context": {
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": order}, {"resource": order | {"id": "b"}}],
            }
        },
    }


def _action_for(request: dict[str, Any], index: int) -> dict[str, Any]:
    resource = copy.deepcopy(request["context"]["draftOrders"]["entry"][index]["resource"])
    action = fixture("coverage_info_system_action_covered.json")
    resource["extension"] = action["resource"]["extension"]
    return {"type": "update", "description": "coverage", "resource": resource}


def test_an_order_left_without_coverage_information_is_caught() -> None:
    request = _two_orders_request()
    body = {"cards": [], "systemActions": [_action_for(request, 0)]}
    assert any("ServiceRequest/b: 0 coverage-information" in p for p in conformance.check_response(request, body))
    body["systemActions"].append(_action_for(request, 1))
    assert not [p for p in conformance.check_response(request, body) if "rule 105" in p]
    body["systemActions"].append(_action_for(request, 1))
    assert any("ServiceRequest/b: 2" in p for p in conformance.check_response(request, body))


def test_cards_with_coverage_topics_or_foreign_associations_are_caught() -> None:
    request = _two_orders_request()
    body = {
        "cards": [
            fixture("instructions.json")
            | {"uuid": "1", "extension": {"davinci-crd.associated-resource": ["ServiceRequest/zzz"]}},
            fixture("instructions.json") | {"uuid": "2"},
        ],
        "systemActions": [_action_for(request, 0), _action_for(request, 1)],
    }
    body["cards"][1]["source"] = body["cards"][1]["source"] | {
        "topic": {"system": conformance.CARD_TYPE_SYSTEMS[0], "code": "coverage-info"}
    }
    problems = conformance.check_response(request, body)
    assert any("rule 82" in p for p in problems) and any("rule 80" in p for p in problems)


def test_a_suggestion_updating_something_outside_the_context_is_caught() -> None:
    request = _two_orders_request()
    card = _alternate()
    card["suggestions"][0]["actions"] = [
        {"type": "update", "description": "x", "resource": {"resourceType": "ServiceRequest", "id": "elsewhere"}}
    ]
    body = {"cards": [card], "systemActions": [_action_for(request, 0), _action_for(request, 1)]}
    assert any("rule 90" in p for p in conformance.check_response(request, body))


# --- Inferno's hook requests reach a proper answer -----------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    app: Flask = create_app({"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'f.sqlite'}"})
    return app.test_client()


@pytest.mark.parametrize(
    ("name", "service"),
    [
        ("order_sign_hook_request.json", "crd-order-sign"),
        ("order_select_hook_request.json", "crd-order-select"),
        ("order_dispatch_hook_request.json", "crd-order-dispatch"),
    ],
)
def test_inferno_hook_requests_are_valid_and_ask_for_the_missing_coverage(
    client: FlaskClient, name: str, service: str
) -> None:
    """Inferno's bodies carry no prefetch and name a FHIR server we cannot reach: 412, not 400/422/5xx.

    Its order-sign and order-select samples put orders for ``Patient/1288992`` under patientId
    ``example``; that alone is a 422 (another patient's order is never decided), so the patient
    is made consistent first."""
    body = fixture(name)
    body["fhirServer"] = "http://127.0.0.1:9/fhir"
    if "draftOrders" in body["context"]:
        body["context"]["patientId"] = "1288992"
    response = client.post(f"/cds-services/{service}", json=body)
    assert response.status_code == 412, response.get_json()
    assert conformance.check_outcome(response.get_json()) == []
    assert response.get_json()["issue"][0]["code"] == "incomplete"


def test_inferno_dispatch_with_a_coverage_gets_coverage_information(client: FlaskClient) -> None:
    """Inferno's draft-style order-dispatch context (``order``/``task``) is decided like ``dispatchedOrders``."""
    body = fixture("order_dispatch_hook_request.json")
    order = fixture("crd_service_request_example.json")
    coverage = fixture("crd_coverage_example.json")
    body.pop("fhirServer")
    body.pop("fhirAuthorization")
    body["context"]["order"] = f"ServiceRequest/{order['id']}"
    body["context"]["patientId"] = order["subject"]["reference"].split("/")[-1]
    coverage["beneficiary"] = {"reference": order["subject"]["reference"]}
    coverage["id"] = "coverage-example"  # the kit's "coverage_example" is not a valid FHIR id (no underscores)
    body["prefetch"] = {
        "coverage": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": coverage}]},
        "orders": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": order}]},
        "patient": {"resourceType": "Patient", "id": body["context"]["patientId"]},
    }
    response = client.post("/cds-services/crd-order-dispatch", json=body)
    payload = response.get_json()
    assert response.status_code == 200, payload
    request_view = body | {
        "hook": "order-dispatch",
        "context": body["context"] | {"dispatchedOrders": [f"ServiceRequest/{order['id']}"]},
    }
    assert conformance.check_response(request_view, payload, {f"ServiceRequest/{order['id']}": order}) == []
    (action,) = payload["systemActions"]
    assert action["resource"]["id"] == order["id"]


def test_inferno_appointment_fixture_with_an_empty_string_is_refused_precisely(client: FlaskClient) -> None:
    """Its Appointment has ``reason.coding.system: ""``; CDS Hooks JSON forbids empty values: 400 naming the path."""
    body = fixture("appointment_book_hook_request.json")
    response = client.post("/cds-services/crd-appointment-book", json=body)
    assert response.status_code == 400
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["$.context.appointments.entry[0].resource.reason.coding.system"]
