"""With nothing prefetched, the Medications a search names are read while the other searches still run."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cds_server.pipeline.fhir_client import FhirClient
from cds_server.scenarios import SCENARIO_DIR, coverage_for, hook_request, load_scenario, patient_id
from cds_server.web.app import create_app
from tests.test_service import coverage_ext

NOW = datetime(2024, 3, 20, 15, 0, tzinfo=UTC)
SCENARIO = "mri/met-failed-conservative-care"
MEDICATION = {"resourceType": "Medication", "id": "m1", "code": {"text": "a drug the EHR codes locally"}}


def ehr(record: list[Mapping[str, Any]], pid: str, medication_asked: threading.Event) -> dict[str, Any]:
    """A stand-in EHR: searches answer by resource type; the Observation search answers only once the
    Medication that a MedicationRequest names is asked for (or after 3 s, if it never is)."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for resource in [*record, coverage_for(pid, f"cov-{pid}")]:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    referencing = {"resourceType": "MedicationRequest", "id": "mr-ref", "status": "active", "intent": "order"}
    by_type.setdefault("MedicationRequest", []).append(
        referencing
        | {"subject": {"reference": f"Patient/{pid}"}, "medicationReference": {"reference": "Medication/m1"}}
    )
    seen: dict[str, Any] = {"overlapped": None}

    def search(self: FhirClient, query: str) -> list[Mapping[str, Any]]:
        kind = query.split("?")[0]
        if kind == "Observation":
            seen["overlapped"] = medication_asked.wait(3.0)
        return list(by_type.get(kind, []))

    def read(self: FhirClient, path: str) -> Mapping[str, Any] | None:
        if path == "Medication/m1":
            medication_asked.set()
            return MEDICATION
        kind, _, rid = path.partition("/")
        return next((r for r in by_type.get(kind, []) if r.get("id") == rid), None)

    return {"search": search, "read": read, "seen": seen}


def test_a_referenced_medication_is_read_before_the_slowest_search_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = load_scenario(SCENARIO_DIR / f"{SCENARIO}.json")
    pid = patient_id(scenario)
    asked = threading.Event()
    fake = ehr(list(scenario.record), pid, asked)
    monkeypatch.setattr(FhirClient, "search", fake["search"])
    monkeypatch.setattr(FhirClient, "read", fake["read"])
    app = create_app(
        {"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite'}", "CLOCK": lambda: NOW}
    )
    body = hook_request(scenario)
    prefetched = coverage_ext(
        app.test_client().post("/cds-services/crd-order-sign", json=body).get_json()["systemActions"][0]["resource"]
    )
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
    assert fake["seen"]["overlapped"] is True, "the Medication read waited for every search to finish"
    fetched = coverage_ext(response.get_json()["systemActions"][0]["resource"])
    assert fetched["pa-needed"] == prefetched["pa-needed"], (fetched, prefetched)
