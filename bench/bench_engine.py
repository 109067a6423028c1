"""Benchmark: decide one order against records of about 60, 600 and 1,800 resources, in process.

Run with ``make bench``. Prints the median and p90 time of the whole in-process
decision (order validated with the FHIR models, record read and indexed with
the production terminology, CarePath evaluated) for each service's order code
and record size, and separately the record reading alone, so the targets can be
checked on this machine (0.5 ms at 60 resources, 10 ms at about 1,800, growth no
worse than linear). Results are recorded in docs/performance.md.

The 60-resource record is hand-written. The larger ones are that record plus
generated history (seeded, so every run reads the same records): years of
Encounters, laboratory Observations with LOINC codes and units, pain scores and
vital signs, MedicationRequests coded with RxNorm SCD product codes from the
terminology file, Conditions coded in SNOMED CT and ICD-10-CM, office-visit
Procedures, a few DiagnosticReports, and resources the reader does not
understand (local-coded observations, a local-coded medication), shaped like
the vendor records of the scenario library (``scenarios/real-world``).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cds_server.carepath_store import DEFAULT_TERMINOLOGY, load_carepaths, terminology_for  # noqa: E402
from cds_server.engine import evaluate_orders  # noqa: E402
from fhir_mappings.orders import read_order, validate_order  # noqa: E402
from fhir_mappings.record import PatientRecord  # noqa: E402

ICD, CPT, SCT = "http://hl7.org/fhir/sid/icd-10-cm", "http://www.ama-assn.org/go/cpt", "http://snomed.info/sct"
LOINC, RX = "http://loinc.org", "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679"  # a vendor's local code system (not understood)
PATIENT = "p"
SIZES = (60, 600, 1800)
AS_OF = date(2024, 3, 20)
ORDERS = {
    "physical-therapy": "97110",
    "mri": "72141",
    "ct-ctm": "72126",
    "spect-ct": "78830",
    "facet": "64490",
    "esi": "62321",
    "rfa": "64633",
    "cyst (64999)": "64999",
}


def cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def record() -> list[dict[str, Any]]:
    """A busy but ordinary record: 60 resources across the types the rules read."""
    res: list[dict[str, Any]] = [{"resourceType": "Patient", "id": "p", "birthDate": "1968-04-02", "gender": "female"}]
    dx = ["M54.2", "M47.812", "M54.12", "E11.9", "I10", "E78.5", "F32.9", "K21.9", "J45.909", "M17.11"]
    for i, code in enumerate(dx):
        res.append(
            {
                "resourceType": "Condition",
                "id": f"c{i}",
                "code": cc(ICD, code),
                "onsetDateTime": f"2023-0{1 + i % 9}-15",
                "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            }
        )
    for i, (code, day) in enumerate(
        [
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
    ):
        res.append(
            {
                "resourceType": "Procedure",
                "id": f"pr{i}",
                "status": "completed",
                "code": cc(CPT, code),
                "performedDateTime": day,
            }
        )
    for i, (day, value) in enumerate(
        [
            ("2023-05-20", 8),
            ("2023-06-20", 3),
            ("2023-08-25", 7),
            ("2023-09-30", 4),
            ("2024-01-04", 7),
            ("2024-02-01", 6),
            ("2024-03-01", 6),
        ]
    ):
        res.append(
            {
                "resourceType": "Observation",
                "id": f"pain{i}",
                "status": "final",
                "code": cc(LOINC, "72514-3"),
                "effectiveDateTime": day,
                "valueQuantity": {"value": value},
            }
        )
    for i, (code, value) in enumerate(
        [("4548-4", 6.8), ("6301-6", 1.0), ("777-3", 240), ("2345-7", 110), ("8310-5", 36.8)]
    ):
        res.append(
            {
                "resourceType": "Observation",
                "id": f"lab{i}",
                "status": "final",
                "code": cc(LOINC, code),
                "effectiveDateTime": "2024-03-01",
                "valueQuantity": {"value": value},
            }
        )
    for i, rxcui in enumerate(
        ["5640", "6809", "29046", "36567", "21949", "41493", "83367", "17767", "32968", "8640", "310965", "197361"]
    ):
        res.append(
            {
                "resourceType": "MedicationStatement",
                "id": f"m{i}",
                "status": "active",
                "medicationCodeableConcept": cc(RX, rxcui),
                "effectivePeriod": {"start": "2024-01-02"},
            }
        )
    for i, code in enumerate(["91936005", "300916003", "418689008", "294505008"]):
        res.append(
            {
                "resourceType": "AllergyIntolerance",
                "id": f"a{i}",
                "code": cc(SCT, code),
                "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"),
            }
        )
    res.append(
        {
            "resourceType": "DiagnosticReport",
            "id": "mri1",
            "status": "final",
            "code": cc(LOINC, "24935-9"),
            "effectiveDateTime": "2023-04-01",
        }
    )
    res.append(
        {
            "resourceType": "ImagingStudy",
            "id": "img1",
            "status": "available",
            "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MR"}],
            "started": "2023-04-01",
        }
    )
    res.append(
        {
            "resourceType": "Encounter",
            "id": "enc",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        }
    )
    res.append({"resourceType": "Coverage", "id": "cov", "status": "active", "beneficiary": {"reference": "Patient/p"}})
    res.append({"resourceType": "Device", "id": "dev", "status": "active", "type": cc(SCT, "14106009")})
    res.append(
        {
            "resourceType": "QuestionnaireResponse",
            "id": "qr",
            "status": "completed",
            "authored": "2024-03-10",
            "questionnaire": "http://cds.payer.example/fhir/Questionnaire/neck-pain-mri",
            "item": [{"linkId": "rf.hyperreflexia", "answer": [{"valueBoolean": False}]}],
        }
    )
    return res


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


def sized_record(size: int) -> list[dict[str, Any]]:
    """The hand-written record, plus generated history up to ``size`` resources."""
    base = record()
    return base + history(size - len(base)) if size > len(base) else base


def order(code: str) -> dict[str, Any]:
    text = {"text": "cervical facet cyst aspiration"} if code == "64999" else {}
    return {
        "resourceType": "ServiceRequest",
        "id": "o",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p"},
        "authoredOn": "2024-03-15",
        "code": cc(CPT, code) | text,
        "reasonCode": [cc(ICD, "M54.2")],
        "encounter": {"reference": "Encounter/enc"},
    }


def read_record(carepaths: list[Any], raw_record: list[dict[str, Any]]) -> PatientRecord:
    """The record as production reads it: the patient's id and the terminology of the loaded CarePaths."""
    return PatientRecord(raw_record, PATIENT, terminology_for(carepaths))


def decide_once(carepaths: list[Any], raw_order: dict[str, Any], raw_record: list[dict[str, Any]]) -> Any:
    validate_order(raw_order)
    return evaluate_orders(carepaths, [read_order(raw_order)], read_record(carepaths, raw_record), AS_OF)


def _percentile(times: list[float], share: float) -> float:
    return times[max(0, int(len(times) * share) - 1)]


def _timed(call: Any, rounds: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


def _summary(times: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(times),
        "p90_ms": _percentile(times, 0.90),
        "p95_ms": _percentile(times, 0.95),
        "min_ms": times[0],
    }


def measure(
    carepaths: list[Any], code: str, raw_record: list[dict[str, Any]], rounds: int, warmup: int = 20
) -> dict[str, float]:
    """Time one whole decision (order validated and read, record read, CarePath evaluated)."""
    raw_order = order(code)
    return _summary(_timed(lambda: decide_once(carepaths, raw_order, raw_record), rounds, warmup))


def rounds_for(size: int, rounds: int) -> int:
    """``rounds`` at 60 resources, fewer for larger records (same total time, at least 50 or ``rounds``)."""
    return max(min(50, rounds), rounds * 60 // size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500, help="rounds per service at 60 resources")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="record sizes, e.g. 60,600,1800")
    parser.add_argument("--services", default="", help="comma-separated subset of the services")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    carepaths = load_carepaths()
    if len(record()) != 60:
        raise SystemExit(f"the benchmark record should hold 60 resources, not {len(record())}")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    wanted = [s.strip() for s in args.services.split(",") if s.strip()]
    services = {n: c for n, c in ORDERS.items() if not wanted or n in wanted}
    results: dict[int, dict[str, Any]] = {}
    for size in sizes:
        raw_record, rounds = sized_record(size), rounds_for(size, args.rounds)
        reading = _summary(_timed(lambda raw=raw_record: read_record(carepaths, raw), rounds, args.warmup))
        per_service = {
            name: measure(carepaths, code, raw_record, rounds, args.warmup) for name, code in services.items()
        }
        results[size] = {
            "resources": len(raw_record),
            "rounds": rounds,
            "record_read": reading,
            "services": per_service,
        }
    if args.json:
        print(json.dumps({"python": platform.python_version(), "results": results}, indent=2))
        return
    print(
        f"one order vs records of {', '.join(str(r['resources']) for r in results.values())} resources, "
        f"Python {platform.python_version()}"
    )
    for res in results.values():
        print(f"\n{res['resources']} resources, {res['rounds']} rounds per service")
        print(f"{'service':<18}{'median ms':>10}{'p90 ms':>10}{'p95 ms':>10}{'min ms':>10}")
        rows = {"(record read)": res["record_read"], **res["services"]}
        for name, r in rows.items():
            print(f"{name:<18}{r['median_ms']:>10.3f}{r['p90_ms']:>10.3f}{r['p95_ms']:>10.3f}{r['min_ms']:>10.3f}")
    for size, res in results.items():
        worst = max(r["median_ms"] for r in res["services"].values())
        target = 0.5 if size <= 60 else 10.0 if size <= 1800 else None
        verdict = (
            ""
            if target is None
            else f" (target: at most {target:g} ms) -> {'OK' if worst <= target else 'OVER TARGET'}"
        )
        print(f"worst median at {res['resources']} resources: {worst:.3f} ms{verdict}")


if __name__ == "__main__":
    main()
