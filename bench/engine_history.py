"""Generated history for the benchmark's larger records (seeded: every run reads the same records).

Years of Encounters, laboratory Observations with LOINC codes and units, pain
scores and vital signs, MedicationRequests coded with RxNorm SCD product codes
from the terminology file, Conditions coded in SNOMED CT and ICD-10-CM,
office-visit Procedures, a few DiagnosticReports, and resources the reader does
not understand (local-coded observations, a local-coded medication), shaped like
the vendor records of the scenario library (``scenarios/real-world``).
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from typing import Any

from cds_server.carepath_store import DEFAULT_TERMINOLOGY

ICD, CPT, SCT = "http://hl7.org/fhir/sid/icd-10-cm", "http://www.ama-assn.org/go/cpt", "http://snomed.info/sct"
LOINC, RX = "http://loinc.org", "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679"  # a vendor's local code system (not understood)
PATIENT = "p"
AS_OF = date(2024, 3, 20)


def cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


# --- generated history -------------------------------------------------------------

# (LOINC, display, UCUM unit, low, high): the everyday laboratory panel of a primary-care record.
LABS = [
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 5.2, 8.5),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 180),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.4),
    ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 7, 25),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 134, 146),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.4, 5.2),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 140, 260),
    ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 60, 300),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 11, 16),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4, 11),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 150, 400),
    ("6301-6", "INR in Platelet poor plasma by Coagulation assay", "{INR}", 0.9, 1.2),
]
VITALS = [
    ("8867-4", "Heart rate", "/min", 55, 95),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 22, 34),
    ("29463-7", "Body weight", "kg", 60, 95),
    ("8310-5", "Body temperature", "Cel", 36.2, 37.4),
]
# Office and ancillary procedures that fill years of a record without bearing on the spine.
VISITS = ["99213", "99214", "99395", "36415", "93000", "90471", "90686", "99203", "81002", "85025"]


def _day(rng: random.Random, years: float = 7.0) -> date:
    return AS_OF - timedelta(days=rng.randint(1, int(365 * years)))


def _subject() -> dict[str, str]:
    return {"reference": f"Patient/{PATIENT}"}


def _terminology_doc() -> dict[str, Any]:
    return json.loads(DEFAULT_TERMINOLOGY.read_text(encoding="utf-8"))


def _products(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """SCD products of everyday ingredients, with a few of the drug classes the rules read."""
    groups = {i["rxcui"]: i.get("group") for i in doc["ingredients"]}
    scd = [p for p in doc["products"] if p.get("tty") == "SCD"]
    common = [p for p in scd if all(groups.get(i) == "common" for i in p["ingredients"])]
    others = [p for p in scd if p not in common]
    return common * 4 + others


def _conditions(doc: dict[str, Any]) -> list[tuple[dict[str, str], dict[str, str]]]:
    return [(m["from"], m["to"][0]) for m in doc["maps"] if m.get("group") == "common"]


def history(count: int, seed: int = 20240320) -> list[dict[str, Any]]:
    """``count`` generated history resources for patient ``p`` (deterministic for a seed)."""
    rng = random.Random(seed)
    doc = _terminology_doc()
    products, conditions = _products(doc), _conditions(doc)
    kinds = [
        ("encounter", 24),
        ("lab", 26),
        ("vital", 8),
        ("pain", 8),
        ("medication", 14),
        ("condition", 7),
        ("procedure", 7),
        ("report", 2),
        ("local", 4),
    ]
    names = [k for k, w in kinds for _ in range(w)]
    out: list[dict[str, Any]] = []
    for i in range(count):
        kind = names[i % len(names)] if i < len(names) else rng.choice(names)
        out.append(_GENERATORS[kind](rng, i, products, conditions))
    return out


def _encounter(rng: random.Random, i: int, *_: Any) -> dict[str, Any]:
    day = _day(rng)
    return {
        "resourceType": "Encounter",
        "id": f"h-enc-{i}",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [
            {
                "coding": [
                    {
                        "system": "urn:oid:1.2.840.114350.1.13.0.1.7.10.698084.30",
                        "code": "101",
                        "display": "Office Visit",
                    }
                ],
                "text": "Office Visit",
            }
        ],
        "subject": _subject(),
        "period": {"start": f"{day.isoformat()}T09:00:00Z", "end": f"{day.isoformat()}T09:30:00Z"},
        "reasonCode": [cc(ICD, rng.choice(["I10", "E78.5", "E11.9", "Z00.00", "J06.9", "K21.9"]))],
    }


def _quantity_observation(
    rng: random.Random, i: int, row: tuple[str, str, str, float, float], category: str
) -> dict[str, Any]:
    code, display, unit, low, high = row
    day = _day(rng)
    return {
        "resourceType": "Observation",
        "id": f"h-obs-{i}",
        "status": rng.choice(["final", "final", "final", "amended"]),
        "category": [cc("http://terminology.hl7.org/CodeSystem/observation-category", category)],
        "code": {
            "coding": [
                {"system": LOINC, "code": code, "display": display},
                {"system": LOCAL, "code": str(3040000000 + i), "display": display.upper()},
            ],
            "text": display,
        },
        "subject": _subject(),
        "effectiveDateTime": f"{day.isoformat()}T08:15:00-05:00",
        "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit, "system": UCUM, "code": unit},
    }


def _lab(rng: random.Random, i: int, *_: Any) -> dict[str, Any]:
    return _quantity_observation(rng, i, rng.choice(LABS), "laboratory")


def _vital(rng: random.Random, i: int, *_: Any) -> dict[str, Any]:
    if rng.random() < 0.3:  # blood pressure: a panel read through its components
        day = _day(rng)
        return {
            "resourceType": "Observation",
            "id": f"h-bp-{i}",
            "status": "final",
            "category": [cc("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")],
            "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
            "subject": _subject(),
            "effectiveDateTime": day.isoformat(),
            "component": [
                {
                    "code": cc(LOINC, "8480-6"),
                    "valueQuantity": {"value": rng.randint(110, 150), "unit": "mm[Hg]", "system": UCUM},
                },
                {
                    "code": cc(LOINC, "8462-4"),
                    "valueQuantity": {"value": rng.randint(65, 95), "unit": "mm[Hg]", "system": UCUM},
                },
            ],
        }
    return _quantity_observation(rng, i, rng.choice(VITALS), "vital-signs")


def _pain(rng: random.Random, i: int, *_: Any) -> dict[str, Any]:
    # Old scores only: the recent ones of the hand-written record decide relief.
    day = AS_OF - timedelta(days=rng.randint(400, 365 * 7))
    return {
        "resourceType": "Observation",
        "id": f"h-pain-{i}",
        "status": "final",
        "category": [cc("http://terminology.hl7.org/CodeSystem/observation-category", "survey")],
        "code": {
            "coding": [
                {"system": LOINC, "code": "72514-3"},
                {"system": LOCAL, "code": "3040104326", "display": "R PAIN SCORE"},
            ],
            "text": "Pain Score",
        },
        "subject": _subject(),
        "effectiveDateTime": day.isoformat(),
        "valueQuantity": {"value": rng.randint(0, 9)},
    }


def _medication(rng: random.Random, i: int, products: list[dict[str, Any]], _c: Any) -> dict[str, Any]:
    product = rng.choice(products)
    day = AS_OF - timedelta(days=rng.randint(400, 365 * 7))  # old courses: finished, out of every window
    return {
        "resourceType": "MedicationRequest",
        "id": f"h-mr-{i}",
        "status": rng.choice(["completed", "completed", "stopped"]),
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RX, "code": product["code"], "display": product["display"]}],
            "text": product["display"],
        },
        "subject": _subject(),
        "authoredOn": day.isoformat(),
        "dosageInstruction": [
            {
                "text": "1 tablet by mouth daily",
                "route": {"coding": [{"system": SCT, "code": "26643006", "display": "Oral route"}]},
            }
        ],
        "dispenseRequest": {
            "numberOfRepeatsAllowed": rng.randint(0, 3),
            "expectedSupplyDuration": {"value": 30, "unit": "days", "system": UCUM, "code": "d"},
        },
    }


def _condition(rng: random.Random, i: int, _p: Any, conditions: list[Any]) -> dict[str, Any]:
    snomed, icd = rng.choice(conditions)
    day = _day(rng)
    resolved = rng.random() < 0.3
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"h-cond-{i}",
        "clinicalStatus": cc(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved" if resolved else "active"
        ),
        "verificationStatus": cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"),
        "category": [cc("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")],
        "code": {
            "coding": [
                {"system": SCT, "code": snomed["code"], "display": snomed.get("display", "")},
                {"system": ICD, "code": icd["code"]},
            ],
            "text": snomed.get("display", ""),
        },
        "subject": _subject(),
        "onsetDateTime": day.isoformat(),
        "recordedDate": day.isoformat(),
    }
    if resolved:
        resource["abatementDateTime"] = min(day + timedelta(days=rng.randint(30, 400)), AS_OF).isoformat()
    return resource


def _procedure(rng: random.Random, i: int, *_: Any) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": f"h-proc-{i}",
        "status": "completed",
        "code": {"coding": [{"system": CPT, "code": rng.choice(VISITS)}, {"system": LOCAL, "code": str(70000 + i)}]},
        "subject": _subject(),
        "performedDateTime": _day(rng).isoformat(),
    }


def _report(rng: random.Random, i: int, *_: Any) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": f"h-dr-{i}",
        "status": "final",
        "category": [cc("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB")],
        "code": {"coding": [{"system": LOINC, "code": rng.choice(["58410-2", "24323-8", "57698-3"])}]},
        "subject": _subject(),
        "effectiveDateTime": _day(rng).isoformat(),
    }


def _local(rng: random.Random, i: int, *_: Any) -> dict[str, Any]:
    """A resource the reader does not understand: a local-coded result (now and then a local-coded drug)."""
    day = _day(rng)
    if i % 5 == 0:
        return {
            "resourceType": "MedicationRequest",
            "id": f"h-local-mr-{i}",
            "status": "completed",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": LOCAL, "code": str(90000 + i)}], "text": "MISC RX"},
            "subject": _subject(),
            "authoredOn": day.isoformat(),
        }
    return {
        "resourceType": "Observation",
        "id": f"h-local-{i}",
        "status": "final",
        "code": {"coding": [{"system": LOCAL, "code": str(5000 + i % 40), "display": "POC RESULT"}]},
        "subject": _subject(),
        "effectiveDateTime": day.isoformat(),
        "valueString": rng.choice(["see note", "normal", "done"]),
    }


_GENERATORS = {
    "encounter": _encounter,
    "lab": _lab,
    "vital": _vital,
    "pain": _pain,
    "medication": _medication,
    "condition": _condition,
    "procedure": _procedure,
    "report": _report,
    "local": _local,
}
