"""Prefetch gaps are filled from a real FHIR server with the hook's token (and only sent there)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from cds_server.pipeline.fhir_client import FhirClient, FhirError
from cds_server.scenarios import SCENARIO_DIR, coverage_for, hook_request, load_scenario, patient_id
from cds_server.web.app import create_app
from tests import conformance
from tests.conftest import FhirTestServer

NOW = datetime(2024, 3, 20, 15, 0, tzinfo=UTC)
SIGN = "/cds-services/crd-order-sign"
SCENARIO = "mri/met-failed-conservative-care"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    return create_app(
        {
            "AUTH_REQUIRED": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'fb.sqlite'}",
            "CLOCK": lambda: NOW,
            "FHIR_MAX_PAGES": 5,
        }
    )


@pytest.fixture
def loaded(fhir_server: FhirTestServer) -> FhirTestServer:
    """The scenario patient's record and Coverage on the FHIR server."""
    scenario = load_scenario(SCENARIO_DIR / f"{SCENARIO}.json")
    pid = patient_id(scenario)
    fhir_server.load([*scenario.record, coverage_for(pid, f"cov-{pid}")])
    fhir_server.reset_log()
    return fhir_server


def remote_request(server: FhirTestServer, keep: tuple[str, ...] = (), token: str | None = None) -> dict[str, Any]:
    body = hook_request(load_scenario(SCENARIO_DIR / f"{SCENARIO}.json"))
    body["prefetch"] = {k: v for k, v in body["prefetch"].items() if k in keep}
    body["fhirServer"] = server.base
    body["fhirAuthorization"] = {
        "access_token": token or server.token,
        "token_type": "Bearer",
        "expires_in": 30,
        "scope": "user/*.read",
        "subject": "cds-service",
    }
    return body


def coverage_info(payload: dict[str, Any]) -> dict[str, Any]:
    ext = payload["systemActions"][0]["resource"]["extension"][-1]
    return {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}


def test_no_prefetch_at_all_fetches_everything_and_decides_the_same(app: Flask, loaded: FhirTestServer) -> None:
    body = remote_request(loaded)
    response = app.test_client().post(SIGN, json=body)
    payload = response.get_json()
    assert response.status_code == 200, payload
    assert conformance.check_response(body, payload) == []
    info = coverage_info(payload)
    assert info["pa-needed"] == "satisfied", "same decision as with full prefetch"
    assert info["coverage"]["reference"].startswith("Coverage/cov-")
    seen = loaded.requests_seen()
    paths = {s["url"].split("?")[0] for s in seen}
    assert {"/fhir/Coverage", "/fhir/Condition", "/fhir/Procedure", "/fhir/Observation"} <= paths
    assert all(s["tokenOk"] for s in seen), "every FHIR call carried the hook's bearer token"


def test_only_missing_keys_are_fetched(app: Flask, loaded: FhirTestServer) -> None:
    prefetched = hook_request(load_scenario(SCENARIO_DIR / f"{SCENARIO}.json"))["prefetch"]
    body = remote_request(loaded, keep=tuple(k for k in prefetched if k != "procedures"))
    body["prefetch"] = {k: v for k, v in prefetched.items() if k != "procedures"}
    assert app.test_client().post(SIGN, json=body).status_code == 200
    fetched = {s["url"].split("?")[0] for s in loaded.requests_seen()}
    assert fetched == {"/fhir/Procedure"}


def test_next_pages_are_followed(app: Flask, fhir_server: FhirTestServer) -> None:
    pid = "paged-patient"
    scores = [
        {
            "resourceType": "Observation",
            "id": f"paged-{i}",
            "status": "final",
            "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
            "effectiveDateTime": f"2024-0{1 + i // 20}-{1 + i % 20:02d}",
            "valueQuantity": {"value": 7},
        }
        for i in range(35)
    ]
    fhir_server.load([{"resourceType": "Patient", "id": pid}, *scores])
    fhir_server.reset_log()
    client = FhirClient(requests.Session(), fhir_server.base, fhir_server.token, 2.0, 5, 1000)
    found = client.search(f"Observation?patient={pid}")
    assert len(found) == 35
    assert len([s for s in fhir_server.requests_seen() if "Observation" in s["url"]]) == 4  # pages of 10
    capped = FhirClient(requests.Session(), fhir_server.base, fhir_server.token, 2.0, 2, 1000)
    with pytest.raises(FhirError, match="more than 2 pages"):
        capped.search(f"Observation?patient={pid}")


def test_a_wrong_token_gets_412_for_the_coverage(app: Flask, loaded: FhirTestServer) -> None:
    body = remote_request(loaded, token="wrong-token")
    response = app.test_client().post(SIGN, json=body)
    assert response.status_code == 412
    assert conformance.check_outcome(response.get_json()) == []


def test_history_that_cannot_be_read_gives_indeterminate_not_a_guess(app: Flask, loaded: FhirTestServer) -> None:
    prefetched = hook_request(load_scenario(SCENARIO_DIR / f"{SCENARIO}.json"))["prefetch"]
    body = remote_request(loaded)
    body["prefetch"] = {"coverage": prefetched["coverage"], "patient": prefetched["patient"]}
    body["fhirAuthorization"]["access_token"] = "expired-token"
    payload = app.test_client().post(SIGN, json=body).get_json()
    info = coverage_info(payload)
    assert (info["covered"], info["pa-needed"]) == ("indeterminate", "indeterminate")
    assert info["reason"]["coding"][0]["code"] == "technical" and "could not be read" in info["reason"]["text"]
    assert conformance.check_response(body, payload) == []


def test_the_token_never_leaves_for_another_host(app: Flask, loaded: FhirTestServer) -> None:
    prefetched = hook_request(load_scenario(SCENARIO_DIR / f"{SCENARIO}.json"))["prefetch"]
    body = remote_request(loaded)
    body["prefetch"] = dict(prefetched)
    body["prefetch"]["observations"] = copy.deepcopy(prefetched["observations"])
    body["prefetch"]["observations"]["link"] = [{"relation": "next", "url": "http://127.0.0.2:9/steal?page=2"}]
    payload = app.test_client().post(SIGN, json=body).get_json()
    assert coverage_info(payload)["covered"] == "indeterminate", "the rest of the record could not be had"
    assert loaded.requests_seen() == [], "no call went anywhere with the token"


def test_order_dispatch_reads_the_dispatched_order(app: Flask, loaded: FhirTestServer) -> None:
    scenario = load_scenario(SCENARIO_DIR / f"{SCENARIO}.json")
    order = copy.deepcopy(scenario.orders[0]) | {"status": "active", "requester": {"reference": "Practitioner/dr"}}
    loaded.load([order])
    body = remote_request(loaded)
    body["hook"] = "order-dispatch"
    body["context"] = {
        "patientId": patient_id(scenario),
        "dispatchedOrders": [f"ServiceRequest/{order['id']}"],
        "performer": "Organization/imaging-center",
    }
    response = app.test_client().post("/cds-services/crd-order-dispatch", json=body)
    payload = response.get_json()
    assert response.status_code == 200, payload
    resource = payload["systemActions"][0]["resource"]
    assert resource["id"] == order["id"] and coverage_info(payload)["pa-needed"] == "satisfied"


def test_appointment_based_on_a_service_request_updates_the_service_request(app: Flask, loaded: FhirTestServer) -> None:
    scenario = load_scenario(SCENARIO_DIR / f"{SCENARIO}.json")
    order = copy.deepcopy(scenario.orders[0]) | {"status": "active", "id": "sr-appt"}
    loaded.load([order])
    appointment = {
        "resourceType": "Appointment",
        "id": "appt-1",
        "status": "proposed",
        "basedOn": [{"reference": "ServiceRequest/sr-appt"}],
        "participant": [{"actor": {"reference": f"Patient/{patient_id(scenario)}"}, "status": "needs-action"}],
    }
    body = remote_request(loaded)
    body["hook"] = "appointment-book"
    body["context"] = {
        "userId": "Practitioner/dr",
        "patientId": patient_id(scenario),
        "appointments": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": "urn:uuid:a1", "resource": appointment}],
        },
    }
    response = app.test_client().post("/cds-services/crd-appointment-book", json=body)
    payload = response.get_json()
    assert response.status_code == 200, payload
    assert payload["systemActions"][0]["resource"]["resourceType"] == "ServiceRequest"
    assert payload["systemActions"][0]["resource"]["id"] == "sr-appt"
    assert json.dumps(payload).count(conformance.EXT) == 1
