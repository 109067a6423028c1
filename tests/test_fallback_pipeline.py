"""With nothing prefetched, what a search names or misses is read while the other searches still run."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_server.pipeline.fhir_client import FhirClient, FhirError
from cds_server.scenarios import SCENARIO_DIR, coverage_for, hook_request, load_scenario, patient_id
from cds_server.web.app import create_app
from tests.test_service import coverage_ext

NOW = datetime(2024, 3, 20, 15, 0, tzinfo=UTC)
SCENARIO = "mri/met-failed-conservative-care"
MEDICATION = {"resourceType": "Medication", "id": "m1", "code": {"text": "a drug the EHR codes locally"}}
RESPONSE = {"resourceType": "QuestionnaireResponse", "id": "qr-doc", "status": "completed", "item": []}


class FakeEhr:
    """A stand-in EHR: searches answer by resource type; the Observation search answers only once
    ``gate`` (a path) is read, or after 3 s if it never is; reads of ``failing`` paths fail."""

    def __init__(self, record: list[Mapping[str, Any]], pid: str, gate: str) -> None:
        self.by_type: dict[str, list[Mapping[str, Any]]] = {}
        for resource in [*record, coverage_for(pid, f"cov-{pid}")]:
            self.by_type.setdefault(resource["resourceType"], []).append(resource)
        self.gate, self.opened, self.overlapped = gate, threading.Event(), None
        self.reads: list[str] = []
        self.failing: set[str] = set()
        self.singles = {"Medication/m1": MEDICATION, "QuestionnaireResponse/qr-doc": RESPONSE}

    def search(self, query: str) -> list[Mapping[str, Any]]:
        kind = query.split("?")[0]
        if kind == "Observation":
            self.overlapped = self.opened.wait(3.0)
        return list(self.by_type.get(kind, []))

    def read(self, path: str) -> Mapping[str, Any] | None:
        self.reads.append(path)
        if path == self.gate:
            self.opened.set()
        if path in self.failing:
            raise FhirError(f"HTTP 503 reading {path}")
        kind, _, rid = path.partition("/")
        return self.singles.get(path) or next((r for r in self.by_type.get(kind, []) if r.get("id") == rid), None)


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(
        {"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite'}", "CLOCK": lambda: NOW}
    )


def serve(monkeypatch: pytest.MonkeyPatch, gate: str, extra: tuple[Mapping[str, Any], ...] = ()) -> FakeEhr:
    scenario = load_scenario(SCENARIO_DIR / f"{SCENARIO}.json")
    ehr = FakeEhr([*scenario.record, *extra], patient_id(scenario), gate)
    monkeypatch.setattr(FhirClient, "search", lambda self, query: ehr.search(query))
    monkeypatch.setattr(FhirClient, "read", lambda self, path: ehr.read(path))
    return ehr


def sign(app: Flask, supporting: str | None = None, prefetched: bool = False) -> dict[str, Any]:
    body = hook_request(load_scenario(SCENARIO_DIR / f"{SCENARIO}.json"))
    if supporting:
        body["context"]["draftOrders"]["entry"][0]["resource"]["supportingInfo"] = [{"reference": supporting}]
    if not prefetched:
        body["prefetch"] = {}
        body["fhirServer"] = "http://ehr.example/fhir"
        body["fhirAuthorization"] = {
            "access_token": "t",
            "token_type": "Bearer",
            "expires_in": 30,
            "scope": "user/*.read",
            "subject": "cds",
        }
    response = app.test_client().post("/cds-services/crd-order-sign", json=body)
    assert response.status_code == 200, response.get_json()
    return coverage_ext(response.get_json()["systemActions"][0]["resource"])


def test_a_referenced_medication_is_read_before_the_slowest_search_is_done(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefetched = sign(app, prefetched=True)
    pid = patient_id(load_scenario(SCENARIO_DIR / f"{SCENARIO}.json"))
    referencing = {"resourceType": "MedicationRequest", "id": "mr-ref", "status": "active", "intent": "order"}
    referencing |= {"subject": {"reference": f"Patient/{pid}"}, "medicationReference": {"reference": "Medication/m1"}}
    ehr = serve(monkeypatch, "Medication/m1", (referencing,))
    fetched = sign(app)
    assert ehr.overlapped is True, "the Medication read waited for every search to finish"
    assert fetched["pa-needed"] == prefetched["pa-needed"], (fetched, prefetched)


def test_a_supporting_response_the_search_missed_is_read_before_the_slowest_search_is_done(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    ehr = serve(monkeypatch, "QuestionnaireResponse/qr-doc")
    sign(app, supporting="QuestionnaireResponse/qr-doc")
    assert ehr.overlapped is True, "the supportingInfo read waited for every search to finish"
    assert ehr.reads.count("QuestionnaireResponse/qr-doc") == 1


def test_a_supporting_response_the_search_found_is_not_read_again(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    pid = patient_id(load_scenario(SCENARIO_DIR / f"{SCENARIO}.json"))
    ehr = serve(monkeypatch, "nothing", ({**RESPONSE, "subject": {"reference": f"Patient/{pid}"}},))
    ehr.opened.set()
    sign(app, supporting="QuestionnaireResponse/qr-doc")
    assert "QuestionnaireResponse/qr-doc" not in ehr.reads


def test_a_supporting_response_that_cannot_be_read_leaves_the_decision_open(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read early or late, a failed read is a technical gap in the record, never "no documentation"."""
    ehr = serve(monkeypatch, "QuestionnaireResponse/qr-doc")
    ehr.failing.add("QuestionnaireResponse/qr-doc")
    info = sign(app, supporting="QuestionnaireResponse/qr-doc")
    assert info["covered"] == "indeterminate" and info["reason"]["coding"][0]["code"] == "technical", info


def test_a_medication_the_same_search_brought_is_not_read_again(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """A MedicationRequest search with ``_include`` brings its Medications: each read would be wasted, token and all."""
    pid = patient_id(load_scenario(SCENARIO_DIR / f"{SCENARIO}.json"))
    referencing = {"resourceType": "MedicationRequest", "id": "mr-ref", "status": "active", "intent": "order"}
    referencing |= {"subject": {"reference": f"Patient/{pid}"}, "medicationReference": {"reference": "Medication/m1"}}
    ehr = serve(monkeypatch, "nothing", (referencing,))
    ehr.opened.set()
    searched = ehr.search
    included = [MEDICATION]
    monkeypatch.setattr(
        FhirClient,
        "search",
        lambda self, query: searched(query) + (included if query.startswith("MedicationRequest") else []),
    )
    sign(app)
    assert "Medication/m1" not in ehr.reads
