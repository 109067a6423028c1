"""The benchmark's records: a hand-written 60-resource record, made larger with generated history.

The 60-resource record holds what the rules read for one neck-pain patient
(diagnoses, therapy and injections, pain scores, labs, medications, allergies,
an earlier MRI, an implant, an earlier documentation answer); the larger ones add
``bench/engine_history.py``'s seeded history to it.
"""

from __future__ import annotations

from typing import Any

from bench.engine_history import CPT, ICD, LOINC, RX, SCT, cc, history


def record() -> list[dict[str, Any]]:
    """A busy but ordinary record: 60 resources across the types the rules read."""
    return [
        {"resourceType": "Patient", "id": "p", "birthDate": "1968-04-02", "gender": "female"},
        *_conditions_60(),
        *_procedures_60(),
        *_pain_scores_60(),
        *_labs_60(),
        *_medications_60(),
        *_allergies_60(),
        *_studies_60(),
        *_context_60(),
    ]


def _conditions_60() -> list[dict[str, Any]]:
    """Ten active diagnoses: the neck-pain cohort and the usual chronic problems."""
    dx = ["M54.2", "M47.812", "M54.12", "E11.9", "I10", "E78.5", "F32.9", "K21.9", "J45.909", "M17.11"]
    return [
        {
            "resourceType": "Condition",
            "id": f"c{i}",
            "code": cc(ICD, code),
            "onsetDateTime": f"2023-0{1 + i % 9}-15",
            "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
        }
        for i, code in enumerate(dx)
    ]


_PROCEDURES_60 = [
    ("97110", "2024-01-05"),
    ("97140", "2024-01-12"),
    ("97112", "2024-01-19"),
    ("97110", "2024-01-26"),
    ("97530", "2024-02-02"),
    ("97110", "2024-02-09"),
    ("64490", "2023-06-01"),
    ("64491", "2023-06-01"),
    ("62321", "2023-09-01"),
    ("99213", "2024-02-20"),
    ("99214", "2023-11-11"),
    ("36415", "2024-01-03"),
    ("93000", "2023-10-10"),
    ("72040", "2023-12-12"),
    ("97161", "2024-01-04"),
]


def _procedures_60() -> list[dict[str, Any]]:
    """Therapy visits, earlier injections and office procedures."""
    return [
        {
            "resourceType": "Procedure",
            "id": f"pr{i}",
            "status": "completed",
            "code": cc(CPT, code),
            "performedDateTime": day,
        }
        for i, (code, day) in enumerate(_PROCEDURES_60)
    ]


def _pain_scores_60() -> list[dict[str, Any]]:
    """Pain scores around the injections and during therapy."""
    scores = [("2023-05-20", 8), ("2023-06-20", 3), ("2023-08-25", 7), ("2023-09-30", 4)]
    scores += [("2024-01-04", 7), ("2024-02-01", 6), ("2024-03-01", 6)]
    return [_observation(f"pain{i}", "72514-3", day, value) for i, (day, value) in enumerate(scores)]


def _labs_60() -> list[dict[str, Any]]:
    results = [("4548-4", 6.8), ("6301-6", 1.0), ("777-3", 240), ("2345-7", 110), ("8310-5", 36.8)]
    return [_observation(f"lab{i}", code, "2024-03-01", value) for i, (code, value) in enumerate(results)]


def _observation(rid: str, loinc: str, day: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": cc(LOINC, loinc),
        "effectiveDateTime": day,
        "valueQuantity": {"value": value},
    }


def _medications_60() -> list[dict[str, Any]]:
    """Twelve medications in use, by ingredient and product RxCUI."""
    rxcuis = ["5640", "6809", "29046", "36567", "21949", "41493", "83367", "17767", "32968", "8640", "310965"]
    return [
        {
            "resourceType": "MedicationStatement",
            "id": f"m{i}",
            "status": "active",
            "medicationCodeableConcept": cc(RX, rxcui),
            "effectivePeriod": {"start": "2024-01-02"},
        }
        for i, rxcui in enumerate([*rxcuis, "197361"])
    ]


def _allergies_60() -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "AllergyIntolerance",
            "id": f"a{i}",
            "code": cc(SCT, code),
            "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"),
        }
        for i, code in enumerate(["91936005", "300916003", "418689008", "294505008"])
    ]


def _studies_60() -> list[dict[str, Any]]:
    """An earlier cervical MRI: its report and its imaging study."""
    return [
        {
            "resourceType": "DiagnosticReport",
            "id": "mri1",
            "status": "final",
            "code": cc(LOINC, "24935-9"),
            "effectiveDateTime": "2023-04-01",
        },
        {
            "resourceType": "ImagingStudy",
            "id": "img1",
            "status": "available",
            "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MR"}],
            "started": "2023-04-01",
        },
    ]


def _context_60() -> list[dict[str, Any]]:
    """The encounter, coverage, an implant and an earlier documentation answer."""
    return [
        {
            "resourceType": "Encounter",
            "id": "enc",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        },
        {"resourceType": "Coverage", "id": "cov", "status": "active", "beneficiary": {"reference": "Patient/p"}},
        {"resourceType": "Device", "id": "dev", "status": "active", "type": cc(SCT, "14106009")},
        {
            "resourceType": "QuestionnaireResponse",
            "id": "qr",
            "status": "completed",
            "authored": "2024-03-10",
            "questionnaire": "http://cds.payer.example/fhir/Questionnaire/neck-pain-mri",
            "item": [{"linkId": "rf.hyperreflexia", "answer": [{"valueBoolean": False}]}],
        },
    ]


def sized_record(size: int) -> list[dict[str, Any]]:
    """The hand-written record, plus generated history up to ``size`` resources."""
    base = record()
    return base + history(size - len(base)) if size > len(base) else base
