"""Tiny builders for FHIR R4 test resources (one place, so tests stay short and readable)."""

from __future__ import annotations

from typing import Any

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# Any Neck Pain questionnaire: answers count for every service of the CarePath that asks the item.
QBASE = "http://cds.payer.example/fhir/Questionnaire/neck-pain-mri"


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def patient(pid: str = "p1", birth: str = "1970-01-01", gender: str = "female") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": birth, "gender": gender}


def condition(cid: str, code: str, onset: str | None = None, system: str = ICD, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "code": concept(system, code),
        "subject": {"reference": "Patient/p1"},
    }
    if onset:
        res["onsetDateTime"] = onset
    res.update(extra)
    return res


def status(code: str, system: str = "http://terminology.hl7.org/CodeSystem/condition-clinical") -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def procedure(pid: str, code: str, day: str, system: str = CPT, **extra: Any) -> dict[str, Any]:
    res = {
        "resourceType": "Procedure",
        "id": pid,
        "status": "completed",
        "code": concept(system, code),
        "performedDateTime": day,
        "subject": {"reference": "Patient/p1"},
    }
    res.update(extra)
    return res


def pain(oid: str, day: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": concept(LOINC, "72514-3"),
        "effectiveDateTime": day,
        "valueQuantity": {"value": value},
        "subject": {"reference": "Patient/p1"},
    }


def med_statement(mid: str, rxcui: str, start: str, end: str | None = None, state: str = "active") -> dict[str, Any]:
    period = {"start": start} | ({"end": end} if end else {})
    return {
        "resourceType": "MedicationStatement",
        "id": mid,
        "status": state,
        "medicationCodeableConcept": concept(RXNORM, rxcui),
        "effectivePeriod": period,
        "subject": {"reference": "Patient/p1"},
    }


def order(
    code: str,
    reason: str | None = "M54.2",
    oid: str = "sr1",
    authored: str | None = None,
    system: str = CPT,
    **extra: Any,
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": oid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": concept(system, code),
    }
    if reason:
        res["reasonCode"] = [concept(ICD, reason)]
    if authored:
        res["authoredOn"] = authored
    res.update(extra)
    return res


def answers(qid: str, authored: str, items: list[dict[str, Any]], questionnaire: str = QBASE) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": qid,
        "status": "completed",
        "questionnaire": questionnaire,
        "authored": authored,
        "item": items,
    }


def answer(link_id: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        key = "valueBoolean"
    elif isinstance(value, int):
        key = "valueInteger"
    elif isinstance(value, float):
        key = "valueDecimal"
    elif isinstance(value, str) and len(value) == 10 and value[4] == "-":
        key = "valueDate"
    else:
        return {"linkId": link_id, "answer": [{"valueCoding": {"code": value}}]}
    return {"linkId": link_id, "answer": [{key: value}]}
