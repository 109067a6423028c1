"""Benchmark: decide one order against a record of about 60 resources, in process.

Run with ``make bench``. Prints the median (and p95) time of the whole
in-process decision (order validated with the FHIR models, record indexed,
CarePath evaluated) for each service's order code, so the 5 ms target can be
checked on this machine. Results are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cds_server.carepath_store import load_carepaths, terminology_for  # noqa: E402
from cds_server.engine import evaluate_orders  # noqa: E402
from fhir_mappings.orders import read_order, validate_order  # noqa: E402
from fhir_mappings.record import PatientRecord  # noqa: E402

ICD, CPT, SCT = "http://hl7.org/fhir/sid/icd-10-cm", "http://www.ama-assn.org/go/cpt", "http://snomed.info/sct"
LOINC, RX = "http://loinc.org", "http://www.nlm.nih.gov/research/umls/rxnorm"
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


def decide_once(carepaths: list[Any], raw_order: dict[str, Any], raw_record: list[dict[str, Any]]) -> Any:
    validate_order(raw_order)
    return evaluate_orders(
        carepaths,
        [read_order(raw_order)],
        PatientRecord(raw_record, None, terminology_for(carepaths)),
        date(2024, 3, 20),
    )


def measure(carepaths: list[Any], code: str, rounds: int) -> dict[str, float]:
    raw_record, raw_order = record(), order(code)
    for _ in range(20):
        decide_once(carepaths, raw_order, raw_record)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        decide_once(carepaths, raw_order, raw_record)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p95_ms": times[int(len(times) * 0.95) - 1], "min_ms": times[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    carepaths = load_carepaths()
    if len(record()) != 60:
        raise SystemExit(f"the benchmark record should hold 60 resources, not {len(record())}")
    results = {name: measure(carepaths, code, args.rounds) for name, code in ORDERS.items()}
    if args.json:
        print(json.dumps({"python": platform.python_version(), "results": results}, indent=2))
        return
    print(f"one order vs a 60-resource record, {args.rounds} rounds, Python {platform.python_version()}")
    print(f"{'service':<18}{'median ms':>10}{'p95 ms':>10}{'min ms':>10}")
    for name, r in results.items():
        print(f"{name:<18}{r['median_ms']:>10.3f}{r['p95_ms']:>10.3f}{r['min_ms']:>10.3f}")
    worst = max(r["median_ms"] for r in results.values())
    print(f"worst median: {worst:.3f} ms (target: at most 5 ms) -> {'OK' if worst <= 5 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
