"""Fail closed on what the reader cannot read (product-decisions.md §1, §5, §7, §8), end to end.

The shape-invariance suite (tests/test_shape_invariance.py) proves that no shape of a present
non-indication is approved; these tests pin what a reader of the answer sees: which resource was not
understood and why, that an empty record stays "none recorded", that an incomplete prefetch is not
silence, that a Medication on the EHR's FHIR server is read, and how orders no CarePath lists are answered.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_server.carepath_store import load_carepaths
from cds_server.engine import OrderDecision, Outcome, Tri
from cds_server.scenarios import SCENARIO_DIR, Scenario, hook_request, load_scenario, run_scenario
from cds_server.web.app import create_app
from tests import conformance
from tests.conftest import FhirTestServer

CAREPATHS = load_carepaths()
FACET = "facet-initial/met-two-levels-mri-spondylosis"
MRI = "mri/met-failed-conservative-care"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SIGN = "/cds-services/crd-order-sign"


def scenario(name: str) -> Scenario:
    return load_scenario(SCENARIO_DIR / f"{name}.json")


def decide(base: Scenario, *extra: dict[str, Any], order: dict[str, Any] | None = None) -> OrderDecision:
    changed = replace(base, record=(*base.record, *extra), orders=(order,) if order else base.orders)
    return run_scenario(changed, CAREPATHS)[0]


def patient_ref(base: Scenario) -> str:
    return next(f"Patient/{r['id']}" for r in base.record if r["resourceType"] == "Patient")


def request(base: Scenario, medication: dict[str, Any], status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "mr-7",
        "status": status,
        "intent": "order",
        "subject": {"reference": patient_ref(base)},
        "authoredOn": "2024-05-01",
        **medication,
    }


def test_the_base_scenarios_are_approved() -> None:
    assert decide(scenario(FACET)).auto_approval
    assert decide(scenario(MRI)).auto_approval


def test_an_unclassified_drug_product_is_named_and_asked_never_none_recorded() -> None:
    base = scenario(FACET)
    unknown = request(base, {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "99999917"}]}})
    decision = decide(base, unknown)
    assert not decision.auto_approval
    assert decision.outcome is Outcome.DOCUMENTATION_NEEDED
    leaf = decision.criterion("FI-NI3.anticoag.medication")
    assert leaf is not None and leaf.result is Tri.UNKNOWN
    assert "MedicationRequest/mr-7: RxNorm 99999917 not classified" in leaf.reason
    assert decision.questions, "one focused question settles it"


def test_a_product_code_is_read_as_its_ingredient() -> None:
    base = scenario(FACET)
    warfarin = request(base, {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "855332"}]}})
    leaf = decide(base, warfarin).criterion("FI-NI3.anticoag.medication")
    assert leaf is not None and leaf.result is Tri.MET and "MedicationRequest/mr-7" in leaf.evidence


@pytest.mark.parametrize("status", ["on-hold", "stopped"])
def test_a_held_or_stopped_blood_thinner_still_counts(status: str) -> None:
    base = scenario(FACET)
    held = request(base, {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "855332"}]}}, status)
    held["dispenseRequest"] = {"validityPeriod": {"start": "2024-05-01", "end": "2024-06-10"}}
    assert not decide(base, held).auto_approval


def test_an_unknown_lisinopril_like_drug_known_by_name_is_understood() -> None:
    """A drug the terminology knows by name (display fallback) is understood: no question, still approved."""
    base = scenario(FACET)
    named = request(base, {"medicationCodeableConcept": {"text": "Lisinopril 10 MG Oral Tablet"}})
    assert decide(base, named).auto_approval


def test_a_medication_listed_after_the_request_is_resolved() -> None:
    base = scenario(FACET)
    mr = request(base, {"medicationReference": {"reference": "Medication/warf"}})
    medication = {
        "resourceType": "Medication",
        "id": "warf",
        "code": {"coding": [{"system": RXNORM, "code": "855332"}]},
    }
    leaf = decide(base, mr, medication).criterion("FI-NI3.anticoag.medication")
    assert leaf is not None and leaf.result is Tri.MET


def test_an_unresolved_medication_reference_is_not_understood() -> None:
    base = scenario(FACET)
    leaf = decide(base, request(base, {"medicationReference": {"reference": "Medication/gone"}})).criterion(
        "FI-NI3.anticoag.medication"
    )
    assert leaf is not None and leaf.result is Tri.UNKNOWN
    assert "medicationReference Medication/gone could not be resolved" in leaf.reason


def test_an_empty_medication_list_is_still_none_recorded() -> None:
    decision = decide(scenario(FACET))
    leaf = decision.criterion("FI-NI3.anticoag.medication")
    assert leaf is not None and leaf.result is Tri.NOT_MET and leaf.reason.startswith("none recorded")


def test_an_unknown_component_of_a_panel_is_not_understood() -> None:
    """A coagulation panel whose platelet row has only a local code may hide a low count: asked, not approved."""
    base = scenario(FACET)
    panel = {
        "resourceType": "Observation",
        "id": "coag-panel",
        "status": "final",
        "subject": {"reference": patient_ref(base)},
        "code": {"coding": [{"system": "urn:oid:1.2.840.114350.1", "code": "PANEL-9"}], "text": "Coag panel"},
        "effectiveDateTime": base.orders[0]["authoredOn"][:10],
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "6301-6"}]}, "valueQuantity": {"value": 1.0}},
            {
                "code": {"coding": [{"system": "urn:oid:1.2.840.114350.1", "code": "PLT"}]},
                "valueQuantity": {"value": 20},
            },
        ],
    }
    decision = decide(base, panel)
    assert not decision.auto_approval
    leaf = decision.criterion("FI-NI3.coagulopathy.platelets")
    assert leaf is not None and leaf.result is Tri.UNKNOWN and "Observation/coag-panel" in leaf.reason


def test_a_finding_recorded_absent_is_evidence_against_it() -> None:
    base = scenario(MRI)
    absent = {
        "resourceType": "Observation",
        "id": "hoffmann",
        "status": "final",
        "subject": {"reference": patient_ref(base)},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "299849001"}]},
        "effectiveDateTime": "2024-03-10",
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "2667000"}], "text": "Absent"},
    }
    leaf = decide(base, absent).criterion("MRI-I6")
    assert (
        leaf is not None and leaf.result is Tri.NOT_MET and "recorded as absent in Observation/hoffmann" in leaf.reason
    )


def test_a_future_authored_on_never_moves_the_decision_date() -> None:
    base = scenario(MRI)
    order = dict(base.orders[0], authoredOn="2030-01-01")
    decision = decide(base, order=order)
    assert decision.evaluation_date == base.evaluation_date.isoformat()
    assert any("after today" in note for note in decision.notes)


def test_an_order_with_no_billing_code_is_never_not_governed() -> None:
    base = scenario(MRI)
    order = dict(base.orders[0], code={"coding": [{"system": "urn:oid:1.2.3.4", "code": "X1"}], "text": "Lab panel"})
    decision = decide(base, order=order)
    assert decision.outcome is Outcome.NOT_APPLICABLE and decision.applicability == "unidentified"


def test_an_order_named_by_its_text_is_decided_as_that_service_but_not_authorized() -> None:
    base = scenario(MRI)
    local = {"coding": [{"system": "urn:oid:1.2.3.4", "code": "2557649"}], "text": "MRI Cervical Spine w/o Contrast"}
    decision = decide(base, order=dict(base.orders[0], code=local))
    assert decision.service_id == "mri" and decision.outcome is Outcome.CRITERIA_MET
    assert not decision.auto_approval and any("text" in note for note in decision.notes)


def test_an_answer_contradicting_the_record_blocks_approval_and_is_named() -> None:
    base = scenario(MRI)
    answer = {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-adult",
        "status": "completed",
        "questionnaire": "http://cds.payer.example/fhir/Questionnaire/neck-pain-mri",
        "subject": {"reference": patient_ref(base)},
        "authored": "2024-03-14",
        "item": [{"linkId": "cc.pain-now", "answer": [{"valueInteger": 0}]}],
    }
    decision = decide(base, answer)
    assert not decision.auto_approval
    assert decision.conflicts and "Pain now" in decision.conflicts[0]


# --- through HTTP: the prefetch as EHRs send it -------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(
        {
            "AUTH_REQUIRED": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'reading.sqlite'}",
            "CLOCK": lambda: datetime(2024, 6, 20, 15, 0, tzinfo=UTC),
        }
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def coverage_info(payload: dict[str, Any]) -> dict[str, Any]:
    ext = payload["systemActions"][0]["resource"]["extension"][-1]
    return {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}


def sign(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(SIGN, json=body)
    payload = response.get_json()
    assert response.status_code == 200, payload
    assert conformance.check_response(body, payload) == []
    return payload


def test_the_base_request_is_approved_over_http(client: FlaskClient) -> None:
    assert coverage_info(sign(client, hook_request(scenario(FACET))))["pa-needed"] == "satisfied"


def test_a_search_bundle_with_an_error_outcome_is_not_silence(client: FlaskClient) -> None:
    body = hook_request(scenario(FACET))
    error = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    body["prefetch"]["medicationRequests"]["entry"].append({"resource": error, "search": {"mode": "outcome"}})
    info = coverage_info(sign(client, body))
    assert info["pa-needed"] == "auth-needed"


def test_a_page_not_read_is_not_silence(client: FlaskClient) -> None:
    body = hook_request(scenario(FACET))
    body["prefetch"]["medicationRequests"]["link"] = [{"relation": "next", "url": "https://ehr.example/fhir/p2"}]
    assert coverage_info(sign(client, body))["pa-needed"] == "auth-needed"


def test_an_unidentified_order_is_conditional(client: FlaskClient) -> None:
    body = hook_request(scenario(MRI))
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["code"] = {"coding": [{"system": "urn:oid:1.2.3.4", "code": "X1"}], "text": "Outside study review"}
    info = coverage_info(sign(client, body))
    assert info["pa-needed"] == "conditional" and info["info-needed"] == "detail-code"


@pytest.mark.parametrize("status", ["completed", {"code": "draft"}, ["draft"], 7, None])
def test_an_order_in_a_status_the_hook_does_not_decide_is_refused(client: FlaskClient, status: Any) -> None:
    """A status that is not a string (found by fuzzing: it was a 500) is as unreadable as a wrong one."""
    body = hook_request(scenario(MRI))
    body["context"]["draftOrders"]["entry"][0]["resource"]["status"] = status
    response = client.post(SIGN, json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["$.context.draftOrders.entry[0].resource.status"]


def test_the_sandbox_snomed_neck_pain_reason_reaches_a_guideline_decision(client: FlaskClient) -> None:
    import json

    captured = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "real-clients"
    body = json.loads((captured / "sandbox-order-sign-request.json").read_text())
    body.pop("fhirServer", None)
    body.pop("fhirAuthorization", None)
    body["prefetch"] = {k: v for k, v in (body.get("prefetch") or {}).items() if v is not None}
    response = client.post(SIGN, json=body)
    payload = response.get_json()
    if response.status_code != 200:
        pytest.skip(f"the captured request needs its FHIR server: {payload['issue'][0]['diagnostics']}")
    info = coverage_info(payload)
    assert info["pa-needed"] != "no-auth", "a SNOMED 'Neck pain' reason puts the MRI in the CarePath"


def referencing_on_the_server(server: FhirTestServer, medication_ref: str) -> dict[str, Any]:
    """An approved facet request whose MedicationRequest names a Medication only the EHR's FHIR server holds."""
    base = scenario(FACET)
    mr = request(base, {}) | {"medicationReference": {"reference": medication_ref}}
    body = hook_request(replace(base, record=(*base.record, mr)))
    body["fhirServer"] = server.base
    body["fhirAuthorization"] = {
        "access_token": server.token,
        "token_type": "Bearer",
        "expires_in": 30,
        "scope": "user/*.read",
        "subject": "cds",
    }
    return body


def test_a_medication_on_the_ehr_server_is_read(client: FlaskClient, fhir_server: FhirTestServer) -> None:
    warfarin = {
        "resourceType": "Medication",
        "id": "warf-5",
        "code": {"coding": [{"system": RXNORM, "code": "855332"}]},
    }
    fhir_server.load([warfarin])
    payload = sign(client, referencing_on_the_server(fhir_server, "Medication/warf-5"))
    assert coverage_info(payload)["pa-needed"] != "satisfied"
    assert "held per protocol" in payload["cards"][0]["detail"], (
        "the server's warfarin was read: the hold plan is asked"
    )


def test_a_medication_the_ehr_server_does_not_have_is_not_understood(
    client: FlaskClient, fhir_server: FhirTestServer
) -> None:
    payload = sign(client, referencing_on_the_server(fhir_server, "Medication/missing-1"))
    assert coverage_info(payload)["pa-needed"] == "auth-needed"
    assert "could not be resolved" in payload["cards"][0]["detail"]


def test_dates_of_reduced_precision_are_not_the_first_day() -> None:
    """An anticoagulant stopped "2024-05" may have stopped on 31 May: within a 7-day window of 6 June."""
    base = scenario(FACET)
    order_date = date.fromisoformat(base.orders[0]["authoredOn"][:10]) if "authoredOn" in base.orders[0] else None
    assert order_date is not None
    stopped = request(
        base, {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "855332"}]}}, "stopped"
    )
    stopped["authoredOn"] = "2024-01-10"
    stopped["dispenseRequest"] = {"validityPeriod": {"start": "2024-01-10", "end": f"{order_date:%Y-%m}"}}
    assert not decide(base, stopped).auto_approval


def _coag_panel(base: Scenario, ident: str, status: str, inr: float, day: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": status,
        "subject": {"reference": patient_ref(base)},
        "code": {"coding": [{"system": "http://loinc.org", "code": "34528-0"}], "text": "PT/INR panel"},
        "effectiveDateTime": day,
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "6301-6"}]}, "valueQuantity": {"value": inr}},
        ],
    }


@pytest.mark.parametrize("status", ["preliminary", "registered", "in-progress", "partial", "not-a-status"])
def test_a_panel_that_is_not_final_never_lends_its_parts_as_final_results(status: str) -> None:
    """A component is read under its panel's status: a preliminary normal INR does not clear a final high one."""
    base = scenario(FACET)
    day = base.orders[0]["authoredOn"][:10]
    earlier = (date.fromisoformat(day).toordinal() - 5, date.fromisoformat(day).toordinal() - 1)
    high = _coag_panel(base, "inr-final", "final", 3.5, date.fromordinal(earlier[0]).isoformat())
    assert decide(base, high).criterion("FI-NI3.coagulopathy.inr").result is Tri.MET  # the final high INR counts
    normal = _coag_panel(base, "inr-new", status, 1.0, date.fromordinal(earlier[1]).isoformat())
    decision = decide(base, high, normal)
    leaf = decision.criterion("FI-NI3.coagulopathy.inr")
    assert not decision.auto_approval
    assert leaf is not None and leaf.result is Tri.MET, "a panel that is not final cleared the INR"
    alone = decide(base, _coag_panel(base, "inr-new", status, 3.5, day)).criterion("FI-NI3.coagulopathy.inr")
    assert alone is not None and alone.result is Tri.UNKNOWN and "Observation/inr-new" in alone.reason


@pytest.mark.parametrize(
    "where",
    ["order reasonReference", "order supportingInfo", "response item", "procedure reasonReference"],
)
def test_a_list_member_holding_a_scalar_is_answered_not_a_500(client: FlaskClient, where: str) -> None:
    """Found by review and fuzzing: ``reasonReference: 5`` in an order was a 500 (iterating a number)."""
    body = hook_request(scenario(MRI))
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    subject = {"reference": patient_ref(scenario(MRI))}
    if where == "order reasonReference":
        order["reasonReference"] = 5
    elif where == "order supportingInfo":
        order["supportingInfo"] = 5
    elif where == "response item":
        qr = {"resourceType": "QuestionnaireResponse", "id": "qr-bad", "status": "completed", "item": 5}
        body["prefetch"]["questionnaireResponses"] = {"resourceType": "Bundle", "entry": [{"resource": qr}]}
    else:
        procedure = {"resourceType": "Procedure", "id": "p-bad", "status": "completed", "subject": subject}
        procedure |= {"code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97110"}]}}
        procedure |= {"performedDateTime": "2024-01-05", "reasonReference": 5}
        body["prefetch"].setdefault("procedures", {"resourceType": "Bundle", "entry": []})
        body["prefetch"]["procedures"].setdefault("entry", []).append({"resource": procedure})
    response = client.post(SIGN, json=body)
    assert response.status_code < 500, response.get_json()
    if response.status_code >= 400:
        assert response.get_json()["resourceType"] == "OperationOutcome"


def test_a_procedure_whose_reason_cannot_be_read_is_not_understood() -> None:
    """Its reason ties therapy to an episode or a region; unreadable, it is not "no reason" (fail closed)."""
    from cds_server.carepath_store import terminology_for
    from fhir_mappings.record import PatientRecord

    therapy = {"resourceType": "Procedure", "id": "pt-1", "status": "completed", "subject": {"reference": "Patient/p"}}
    therapy |= {"code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97110"}]}}
    therapy |= {"performedDateTime": "2024-01-05", "reasonReference": {"reference": "Condition/c"}}
    record = PatientRecord([therapy], "p", terminology_for(CAREPATHS))
    assert [u.ref for u in record.unread.get("Procedure", [])] == ["Procedure/pt-1"]
    assert "reasonReference" in record.unread["Procedure"][0].why
