"""The scenario library: synthetic patients with orders and the decisions they must get.

One scenario per JSON file under ``scenarios/``. The tests run every one; the
benchmarks and the demo page reuse them. The format is described in
``scenarios/README.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from cds_server.carepath_store import terminology_for
from cds_server.engine import CarePath, OrderDecision, evaluate_orders
from fhir_mappings.dates import parse_date
from fhir_mappings.orders import read_order, validate_order
from fhir_mappings.record import PatientRecord

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
EXEMPTIONS_NAME = "coverage-exemptions.json"


@dataclass(frozen=True)
class Scenario:
    """One scenario file, parsed."""

    name: str
    path: Path
    description: str
    evaluation_date: date
    record: tuple[Mapping[str, Any], ...]
    orders: tuple[Mapping[str, Any], ...]
    record_available: bool
    expect: tuple[Mapping[str, Any], ...]
    tags: tuple[str, ...]


class ScenarioError(ValueError):
    """A scenario file is malformed."""


def load_scenario(path: Path) -> Scenario:
    """Parse one scenario file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    day = parse_date(data.get("evaluationDate"))
    if day is None:
        raise ScenarioError(f"{path}: evaluationDate must be a date")
    for key in ("description", "record", "orders", "expect"):
        if key not in data:
            raise ScenarioError(f"{path}: missing {key!r}")
    name = str(path.relative_to(SCENARIO_DIR).with_suffix("")) if path.is_relative_to(SCENARIO_DIR) else path.stem
    return Scenario(
        name=name,
        path=path,
        description=data["description"],
        evaluation_date=day,
        record=tuple(data["record"]),
        orders=tuple(data["orders"]),
        record_available=bool(data.get("recordAvailable", True)),
        expect=tuple(data["expect"]),
        tags=tuple(data.get("tags") or ()),
    )


def iter_scenarios(root: Path = SCENARIO_DIR) -> Iterator[Scenario]:
    """Yield every scenario under ``root``, sorted by path."""
    for path in sorted(root.glob("*/**/*.json")):
        if path.name != EXEMPTIONS_NAME:
            yield load_scenario(path)


def run_scenario(scenario: Scenario, carepaths: Sequence[CarePath]) -> list[OrderDecision]:
    """Evaluate a scenario's orders the way the service does (orders validated first)."""
    orders = []
    for index, raw in enumerate(scenario.orders):
        validate_order(raw)
        orders.append(read_order(raw, index))
    record = PatientRecord(scenario.record, patient_id(scenario), terminology_for(carepaths))
    return evaluate_orders(carepaths, orders, record, scenario.evaluation_date, scenario.record_available)


def mismatches(scenario: Scenario, decisions: Sequence[OrderDecision]) -> list[str]:
    """Return every way the decisions differ from the scenario's expectations (empty when they agree)."""
    by_order = {d.order_ref: d for d in decisions}
    problems: list[str] = []
    for exp in scenario.expect:
        decision = by_order.get(exp["order"])
        if decision is None:
            problems.append(f"{exp['order']}: no decision (orders decided: {', '.join(by_order)})")
            continue
        problems.extend(_compare(exp, decision))
    return problems


def _compare(exp: Mapping[str, Any], decision: OrderDecision) -> list[str]:
    where = exp["order"]
    out = []
    if decision.outcome.value != exp["outcome"]:
        out.append(f"{where}: outcome {decision.outcome.value!r}, expected {exp['outcome']!r} ({decision.summary})")
    if "service" in exp and decision.service_id != exp["service"]:
        out.append(f"{where}: service {decision.service_id!r}, expected {exp['service']!r}")
    results = decision.results_by_id()
    for crit, want in (exp.get("criteria") or {}).items():
        got = results.get(crit)
        if got is None:
            out.append(f"{where}: criterion {crit} was not evaluated")
        elif got.value != want:
            node = decision.criterion(crit)
            out.append(f"{where}: {crit} is {got.value!r}, expected {want!r} ({node.reason if node else ''})")
    for q in exp.get("questions") or []:
        if q not in decision.questions:
            out.append(f"{where}: question {q} not asked (asked: {', '.join(decision.questions) or 'none'})")
    for q in exp.get("notQuestions") or []:
        if q in decision.questions:
            out.append(f"{where}: question {q} asked but should not be")
    if "failing" in exp and sorted(exp["failing"]) != sorted(decision.failing):
        out.append(f"{where}: failing {decision.failing}, expected {exp['failing']}")
    if "autoApproval" in exp and decision.auto_approval != exp["autoApproval"]:
        out.append(f"{where}: autoApproval {decision.auto_approval}, expected {exp['autoApproval']}")
    return out


STATES = ("met", "not-met", "unknown")
OUTCOMES = ("criteria-met", "not-met", "contraindicated", "documentation-needed", "not-applicable")


def load_exemptions(root: Path = SCENARIO_DIR) -> dict[str, dict[str, str]]:
    """Return {criterion id or 'outcome:<service>': {state: reason}} for states that cannot occur.

    Every ``coverage-exemptions.json`` under the library contributes, so each
    folder keeps the exemptions of its own service next to its scenarios.
    """
    merged: dict[str, dict[str, str]] = {}
    for path in sorted(root.rglob(EXEMPTIONS_NAME)):
        for key, states in json.loads(path.read_text(encoding="utf-8"))["exemptions"].items():
            merged.setdefault(key, {}).update(states)
    return merged


def coverage_gaps(carepath: CarePath, scenarios: Sequence[Scenario]) -> list[str]:
    """Return criterion states and service outcomes no scenario asserts (minus declared exemptions)."""
    seen: dict[str, set[str]] = {}
    outcomes: dict[str, set[str]] = {}
    for scenario in scenarios:
        for exp in scenario.expect:
            for crit, state in (exp.get("criteria") or {}).items():
                seen.setdefault(crit, set()).add(state)
            if "service" in exp:
                outcomes.setdefault(exp["service"], set()).add(exp["outcome"])
    exempt = load_exemptions()
    gaps = []
    for node_id in sorted(carepath.nodes):
        missing = [s for s in STATES if s not in seen.get(node_id, set()) and s not in exempt.get(node_id, {})]
        if missing:
            gaps.append(f"{node_id}: {', '.join(missing)}")
    for service in carepath.services:
        key = f"outcome:{service.id}"
        missing = [o for o in OUTCOMES if o not in outcomes.get(service.id, set()) and o not in exempt.get(key, {})]
        if missing:
            gaps.append(f"{key}: {', '.join(missing)}")
    return gaps


def main() -> None:
    """Print the scenario library's results and coverage gaps (``python -m cds_server.scenarios``)."""
    from cds_server.carepath_store import load_carepaths

    carepaths = load_carepaths()
    scenarios = list(iter_scenarios())
    failed = 0
    for scenario in scenarios:
        problems = mismatches(scenario, run_scenario(scenario, carepaths))
        if problems:
            failed += 1
            print(f"FAIL {scenario.name}: " + "; ".join(problems))
    gaps = coverage_gaps(carepaths[0], scenarios)
    print(f"{len(scenarios) - failed} passed, {failed} failed")
    print(f"{len(gaps)} coverage gaps" + (":" if gaps else ""))
    for gap in gaps:
        print("  " + gap)


# --- scenarios as CDS Hooks requests (for the HTTP tests, the demo and load tests) ---------

_KEY_OF_TYPE = {
    "Patient": "patient",
    "Condition": "conditions",
    "Procedure": "procedures",
    "Observation": "observations",
    "MedicationRequest": "medicationRequests",
    "MedicationStatement": "medicationStatements",
    "MedicationDispense": "medicationDispenses",
    "AllergyIntolerance": "allergies",
    "Device": "devices",
    "DiagnosticReport": "diagnosticReports",
    "ImagingStudy": "imagingStudies",
    "Encounter": "encounters",
    "QuestionnaireResponse": "questionnaireResponses",
    "Coverage": "coverage",
}
SEARCH_KEYS = tuple(k for k in dict.fromkeys(_KEY_OF_TYPE.values()) if k != "patient")


def patient_id(scenario: Scenario) -> str:
    """Return the scenario patient's id (or a placeholder when the record has no Patient)."""
    for resource in scenario.record:
        if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
            return str(resource["id"])
    for order in scenario.orders:  # no Patient in the record: the orders say whose they are
        ref = (order.get("subject") or {}).get("reference")
        if isinstance(ref, str) and ref.startswith("Patient/"):
            return ref.split("/", 1)[1]
    return "unknown-patient"


def coverage_for(pid: str, cid: str = "cov-1") -> dict[str, Any]:
    """Return an active Coverage with this payer for the patient."""
    return {
        "resourceType": "Coverage",
        "id": cid,
        "status": "active",
        "subscriberId": f"M-{pid}",
        "beneficiary": {"reference": f"Patient/{pid}"},
        "payor": [{"reference": "Organization/payer", "display": "Example Health Plan"}],
        "class": [
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]
                },
                "value": "PPO-1",
            }
        ],
    }


def searchset(resources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return a searchset Bundle of the resources."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": dict(r)} for r in resources],
    }


def hook_request(scenario: Scenario, hook: str = "order-sign", hook_instance: str | None = None) -> dict[str, Any]:
    """Return the CDS Hooks request an EHR would send for this scenario, everything prefetched."""
    import uuid

    pid = patient_id(scenario)
    by_key: dict[str, list[Mapping[str, Any]]] = {k: [] for k in SEARCH_KEYS}
    prefetch: dict[str, Any] = {"patient": None}
    for resource in scenario.record:
        key = _KEY_OF_TYPE.get(str(resource.get("resourceType")))
        if key == "patient":
            prefetch["patient"] = dict(resource)
        elif key:
            by_key[key].append(resource)
    if not by_key["coverage"]:
        by_key["coverage"] = [coverage_for(pid)]
    prefetch.update({key: searchset(items) for key, items in by_key.items()})
    orders = [dict(o) for o in scenario.orders]
    context: dict[str, Any] = {
        "userId": "Practitioner/example",
        "patientId": pid,
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{o.get('id')}", "resource": o} for o in orders],
        },
    }
    if hook == "order-select":
        context["selections"] = [f"{o['resourceType']}/{o['id']}" for o in orders]
    return {"hookInstance": hook_instance or str(uuid.uuid4()), "hook": hook, "context": context, "prefetch": prefetch}


if __name__ == "__main__":
    main()
