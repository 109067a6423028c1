"""Adding a guideline is adding a file: a second CarePath that exists only in the tests."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from cds_server.carepath_store import DEFAULT_CAREPATHS, load_carepaths, terminology_for
from cds_server.engine import CarePath, Outcome, evaluate_orders
from fhir_mappings.orders import read_order
from fhir_mappings.record import PatientRecord
from tests import builders as b

KNEE = Path(__file__).parent / "fixtures" / "knee-injection-mini.json"


@pytest.fixture(scope="module")
def both() -> list[CarePath]:
    return load_carepaths((DEFAULT_CAREPATHS[0], KNEE))


def decide(carepaths: list[CarePath], order: dict, record: list[dict]) -> object:
    return evaluate_orders(
        carepaths, [read_order(order)], PatientRecord(record, None, terminology_for(carepaths)), date(2024, 6, 1)
    )[0]


def test_knee_order_is_decided_by_the_knee_carepath(both: list[CarePath]) -> None:
    record = [
        b.patient(birth="1960-01-01"),
        {
            "resourceType": "DiagnosticReport",
            "id": "xr",
            "status": "final",
            "code": b.concept(b.LOINC, "36598-1"),
            "effectiveDateTime": "2024-02-01",
        },
    ]
    decision = decide(both, b.order("20610", reason="M17.11"), record)
    assert (decision.carepath_id, decision.service_id, decision.outcome) == (
        "knee-oa-mini",
        "knee-injection",
        Outcome.CRITERIA_MET,
    )
    assert decision.criterion("KNEE-I2").evidence == ["DiagnosticReport/xr"]
    assert decision.criterion("KNEE-NI1").reason.startswith("none recorded")


def test_neck_order_still_goes_to_the_neck_carepath(both: list[CarePath]) -> None:
    decision = decide(both, b.order("72141"), [b.patient()])
    assert decision.carepath_id == "neck-pain" and decision.service_id == "mri"


def test_knee_code_with_a_neck_diagnosis_is_outside_the_cohort(both: list[CarePath]) -> None:
    decision = decide(both, b.order("20610", reason="M54.2"), [b.patient()])
    assert decision.outcome is Outcome.NOT_APPLICABLE and decision.applicability == "outside-cohort"


def test_knee_carepath_reads_its_own_questionnaire_answers(both: list[CarePath]) -> None:
    record = [
        b.patient(birth="1960-01-01"),
        b.answers(
            "qr",
            "2024-05-30",
            [b.answer("knee.xray-done", True)],
            questionnaire="http://cds.payer.example/fhir/Questionnaire/knee-oa-mini-knee-injection",
        ),
    ]
    decision = decide(both, b.order("20610", reason="M17.11"), record)
    assert decision.outcome is Outcome.CRITERIA_MET
    assert decision.answers_used == ["QuestionnaireResponse/qr#knee.xray-done"]


def test_answers_to_one_carepath_never_count_for_another(both: list[CarePath]) -> None:
    """Both CarePaths share a canonical base and the linkId ``safety.infection-site``."""
    knee_answer = b.answers(
        "qr-knee",
        "2024-05-30",
        [b.answer("safety.infection-site", False)],
        questionnaire="http://cds.payer.example/fhir/Questionnaire/knee-oa-mini-knee-injection",
    )
    neck = decide(both, b.order("62321", reason="M54.12"), [b.patient(), knee_answer])
    assert neck.carepath_id == "neck-pain"
    assert not any("qr-knee" in used for used in neck.answers_used)
    neck_answer = knee_answer | {
        "id": "qr-neck",
        "questionnaire": "http://cds.payer.example/fhir/Questionnaire/neck-pain-esi",
    }
    knee = decide(both, b.order("20610", reason="M17.11"), [b.patient(birth="1960-01-01"), neck_answer])
    assert not any("qr-neck" in used for used in knee.answers_used)


def test_a_carepath_whose_id_extends_another_keeps_its_answers_to_itself() -> None:
    """``neck-pain-peds-knee-injection`` starts with ``neck-pain-``; it is still not a Neck Pain questionnaire."""
    import json

    from cds_server.carepath_store import load_schema
    from cds_server.engine import compile_carepath

    doc = json.loads(KNEE.read_text()) | {"id": "neck-pain-peds"}
    carepaths = [load_carepaths((DEFAULT_CAREPATHS[0],))[0], compile_carepath(doc, load_schema())]
    answer = b.answers(
        "qr-peds",
        "2024-05-30",
        [b.answer("safety.infection-site", False)],
        questionnaire="http://cds.payer.example/fhir/Questionnaire/neck-pain-peds-knee-injection",
    )
    neck = decide(carepaths, b.order("62321", reason="M54.12"), [b.patient(), answer])
    assert neck.carepath_id == "neck-pain" and neck.answers_used == []


def test_young_patient_fails_the_knee_age_criterion(both: list[CarePath]) -> None:
    decision = decide(both, b.order("20610", reason="M17.11"), [b.patient(birth="1995-01-01")])
    assert decision.outcome is Outcome.NOT_MET and decision.failing == ["KNEE-I1"]


def test_a_carepath_without_fact_settings_cannot_use_operators_that_need_them() -> None:
    import copy
    import json

    from cds_server.carepath_store import load_schema
    from cds_server.engine import InvalidCarePathError, compile_carepath

    doc = json.loads(KNEE.read_text())
    bad = copy.deepcopy(doc)
    bad["services"][0]["criteria"]["indications"]["all"][0] = {
        "id": "KNEE-I1",
        "text": "Symptoms for 6 weeks",
        "cite": "Test",
        "op": "symptom_duration",
        "args": {"comparator": ">", "weeks": 6},
    }
    with pytest.raises(InvalidCarePathError, match="needs the facts.symptomOnset settings"):
        compile_carepath(bad, load_schema())
