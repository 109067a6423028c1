"""Reading FHIR: code normalisation, statuses that count, medications, answers and draft orders."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_server.carepath_store import load_carepaths, terminology_for
from fhir_mappings.codes import CodeMatcher, concept_codes
from fhir_mappings.dates import age_in_years, parse_date
from fhir_mappings.orders import InvalidOrderError, read_order, validate_order
from fhir_mappings.questionnaire import Answers, ItemKind
from fhir_mappings.record import PatientRecord
from fhir_mappings.systems import HCPCS, ICD10CM, normalize_icd10
from tests import builders as b

TERMINOLOGY = terminology_for(load_carepaths())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("M47812", "M47.812"),
        ("m542", "M54.2"),
        ("M54.2", "M54.2"),
        ("D65", "D65"),
        (" M50.120 ", "M50.120"),
        ("M53.2X1", "M53.2X1"),
        ("M532x1", "M53.2X1"),
    ],
)
def test_icd10_codes_are_dotted_and_upper_case(raw: str, expected: str) -> None:
    assert normalize_icd10(raw) == expected


def test_system_spellings_are_canonicalised() -> None:
    codes = concept_codes(
        {
            "coding": [
                {"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "code": "g0151"},
                {"system": "urn:oid:2.16.840.1.113883.6.90", "code": "M5412"},
                {"system": ICD10CM},  # no code: ignored
                {"code": "M54.2"},  # no system: never compared
            ]
        }
    )
    assert codes == {(HCPCS, "G0151"), (ICD10CM, "M54.12")}


def test_value_set_prefix_exact_and_exclusion() -> None:
    atc = "http://www.whocc.no/atc"
    matcher = CodeMatcher.from_members(
        [
            {"system": atc, "code": "B01AC", "match": "prefix"},
            {"system": ICD10CM, "code": "M50.1", "match": "prefix"},
            {"system": ICD10CM, "code": "Z79.01"},
        ],
        exclude=[{"system": atc, "code": "B01AC06"}],
    )
    assert matcher.matches((atc, "B01AC04"))
    assert not matcher.matches((atc, "B01AC06")), "aspirin is excluded from the antiplatelet class"
    assert matcher.matches((ICD10CM, "M50.120"))
    assert not matcher.matches((ICD10CM, "M50.20"))
    assert matcher.matches((ICD10CM, "Z79.01"))
    assert not matcher.matches(("http://snomed.info/sct", "Z79.01")), "system and code, never a bare code"


def test_union_keeps_exclusions_of_each_side() -> None:
    atc = "http://www.whocc.no/atc"
    left = CodeMatcher.from_members(
        [{"system": atc, "code": "B01AC", "match": "prefix"}], exclude=[{"system": atc, "code": "B01AC06"}]
    )
    right = CodeMatcher.from_members([{"system": atc, "code": "N02BA01"}])
    both = left.union(right)
    assert both.matches((atc, "N02BA01")) and both.matches((atc, "B01AC04"))
    assert not both.matches((atc, "B01AC06"))


def test_dates_parse_partial_and_reject_garbage() -> None:
    assert parse_date("2024") == date(2024, 1, 1)
    assert parse_date("2024-02-30") is None
    assert parse_date(20240101) is None
    assert age_in_years(date(2006, 3, 21), date(2024, 3, 20)) == 17
    assert age_in_years(date(2006, 3, 20), date(2024, 3, 20)) == 18


def test_record_drops_what_must_not_count() -> None:
    record = PatientRecord(
        [
            b.patient(),
            b.condition("active", "M54.2", clinicalStatus=b.status("active")),
            b.condition("no-status", "M54.12"),
            b.condition("resolved", "M50.20", clinicalStatus=b.status("resolved")),
            b.condition(
                "refuted",
                "M48.02",
                verificationStatus=b.status("refuted", "http://terminology.hl7.org/CodeSystem/condition-ver-status"),
            ),
            b.procedure("done", "97110", "2024-01-01"),
            b.procedure("error", "97110", "2024-01-02") | {"status": "entered-in-error"},
            b.procedure("planned", "97110", "2024-01-03") | {"status": "preparation"},
            {
                "resourceType": "Observation",
                "id": "prelim",
                "status": "preliminary",
                "code": b.concept(b.LOINC, "72514-3"),
            },
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": b.procedure("bundled", "97140", "2024-01-04")}],
            },
            "not a resource",
            {"id": "no-type"},
        ],
        None,
        TERMINOLOGY,
    )
    conditions = {e.ref: e.active_now for e in record.entries("Condition")}
    # A resolved Condition is history (it counts only in a look-back window it was active in).
    assert conditions == {"Condition/active": True, "Condition/no-status": True, "Condition/resolved": False}
    assert [e.ref for e in record.entries("Procedure")] == ["Procedure/done", "Procedure/bundled"]
    assert record.entries("Observation") == []
    # A preliminary result is not silence: it is kept as not understood, with its codes.
    assert [(u.ref, u.codes) for u in record.unread_of("Observation")] == [
        ("Observation/prelim", frozenset({(b.LOINC, "72514-3")}))
    ]
    assert set(record.ignored) >= {"Condition/refuted", "Procedure/error", "Procedure/planned"}


def test_medication_reference_to_contained_product_yields_ingredient_codes() -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "mr",
        "status": "active",
        "intent": "order",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med",
                "code": b.concept(b.RXNORM, "855332"),
                "ingredient": [{"itemCodeableConcept": b.concept(b.RXNORM, "11289")}],
            }
        ],
        "medicationReference": {"reference": "#med"},
        "authoredOn": "2024-01-01",
    }
    entry = PatientRecord([request], None, TERMINOLOGY).entries("MedicationRequest")[0]
    assert (b.RXNORM, "11289") in entry.codes and (b.RXNORM, "855332") in entry.codes


def test_latest_questionnaire_response_wins_per_item() -> None:
    older = b.answers("q-old", "2024-01-01", [b.answer("cc.failed", False), b.answer("cc.weeks", 4)])
    newer = b.answers("q-new", "2024-02-01T10:00:00Z", [b.answer("cc.failed", True)])
    found = Answers([older, newer])
    assert found.first("cc.failed").value is True
    assert found.first("cc.failed").source == "QuestionnaireResponse/q-new#cc.failed"
    assert found.first("cc.weeks").value == 4, "an item only the older response answers still counts"


@pytest.mark.parametrize(
    "unreadable",
    [
        [{"valueCoding": {"display": "No"}}],  # a coding with no code
        [{"valueBoolean": "false"}],  # a boolean sent as a string
        ["no"],  # not an answer object
        {"valueBoolean": False},  # one answer, not a list of them
        [{"valueReference": {"reference": "Observation/x"}}],  # a type no item here takes
        [{"valueBoolean": False}, {"valueCoding": {}}],  # one of several answers unreadable
    ],
)
def test_an_unreadable_newer_answer_is_not_replaced_by_an_older_one(unreadable: Any) -> None:
    """The newer answer may be the clinician's correction: the older one must not count in its place."""
    older = b.answers("q-old", "2024-01-01", [b.answer("cc.failed", True), b.answer("cc.weeks", 8)])
    newer = b.answers("q-new", "2024-02-01", [{"linkId": "cc.failed", "answer": unreadable}])
    found = Answers([older, newer])
    assert found.get("cc.failed") == [] and found.first("cc.failed") is None
    assert found.unreadable() == {"cc.failed": "QuestionnaireResponse/q-new"}
    assert found.first("cc.weeks").value == 8, "items the newer response does not touch still count"
    assert Answers([newer, older]).get("cc.failed") == [], "the order responses come in does not matter"


def test_an_answer_that_does_not_fit_its_item_is_not_read() -> None:
    """A string "true" for a yes/no item, or a code the choice does not offer, is not taken for "no"."""
    kinds = {"rf.fever": ItemKind("boolean"), "cc.classes": ItemKind("choice", frozenset({"nsaid", "none"}))}
    qr = b.answers(
        "q",
        "2024-01-01",
        [{"linkId": "rf.fever", "answer": [{"valueString": "true"}]}, b.answer("cc.classes", "NSAID")],
    )
    typed = Answers([qr], kinds)
    assert typed.get("rf.fever") == [] and typed.unreadable_source("rf.fever") == "QuestionnaireResponse/q"
    assert typed.unreadable_source("cc.classes") == "QuestionnaireResponse/q"
    assert Answers([qr]).first("rf.fever").value == "true", "without the items' kinds, only the JSON types are checked"


def test_repeating_history_groups_are_read_as_instances() -> None:
    qr = b.answers(
        "q",
        "2024-01-01",
        [
            {"linkId": "hx.proc", "item": [b.answer("hx.proc.date", "2023-10-01"), b.answer("hx.proc.relief-pct", 70)]},
            {"linkId": "hx.proc", "item": [b.answer("hx.proc.date", "2023-12-01"), b.answer("hx.proc.type", "esi")]},
        ],
    )
    groups = Answers([qr]).groups("hx.proc")
    assert [g.first("hx.proc.date") for g in groups] == [date(2023, 10, 1), date(2023, 12, 1)]
    assert groups[0].first("hx.proc.relief-pct") == 70 and groups[1].first("hx.proc.type") == "esi"


def test_draft_orders_are_validated_with_fhir_models() -> None:
    validate_order(b.order("72141"))
    with pytest.raises(InvalidOrderError, match="intent"):
        validate_order({k: v for k, v in b.order("72141").items() if k != "intent"})
    with pytest.raises(InvalidOrderError, match="not an order type"):
        validate_order(b.patient())
    with pytest.raises(InvalidOrderError, match="authoredOn"):
        validate_order(b.order("72141", authored="yesterday"))


def test_order_is_reduced_to_what_rules_read() -> None:
    raw = b.order(
        "97110",
        authored="2024-03-01",
        quantityQuantity={"value": 12},
        occurrenceTiming={
            "repeat": {"frequency": 2, "period": 1, "periodUnit": "wk", "boundsDuration": {"value": 6, "code": "wk"}}
        },
        locationCode=[
            b.concept("https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set", "11")
        ],
    )
    got = read_order(raw)
    assert got.ref == "ServiceRequest/sr1" and got.authored_on == date(2024, 3, 1)
    assert got.quantity == 12 and got.timing is not None and got.timing.bounds_weeks == 6
    assert (ICD10CM, "M54.2") in got.reason_codes
