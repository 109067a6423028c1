"""Shape invariance: the decision depends on the facts, not on how an EHR wrote them.

1. **Injection.** For every library order that is auto-approved, every non-indication
   leaf of its service is made present by one finding, written in every shape of the
   catalogue (tests/shapes.py), understood or not. None may leave the order
   auto-approved: an understood finding makes the non-indication present, a not
   understood one makes it unknown (product-decisions.md §1).
2. **Re-encoding.** Every scenario's record is rewritten in alternative understood
   shapes; outcome, auto-approval and every criterion result must stay the same.

Each test writes a one-line count ("N variants, M flips") for the end of the run and
fails listing up to 30 flips. Runtime is bounded by sampling (see ``_sampled``).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_server.carepath_store import load_carepaths, terminology_for
from cds_server.engine import CarePath, OrderDecision
from cds_server.engine.logic import Tri, all_of, any_of
from cds_server.engine.model import Group, Leaf, Node, Ref
from cds_server.engine.op_order import requested  # the order's own visits/weeks, as the engine reads them
from cds_server.engine.result import CriterionResult
from cds_server.scenarios import Scenario, iter_scenarios, patient_id, run_scenario
from fhir_mappings.dates import age_in_years, parse_date
from fhir_mappings.orders import read_order
from fhir_mappings.record import PatientRecord
from tests import shapes
from tests.shapes import ICD10CM, LOINC, RXNORM, SNOMED, Finding

CAREPATHS = load_carepaths()
SCENARIOS = list(iter_scenarios())
MAX_LISTED = 30

# Every shape runs for the first FULL_PER_SERVICE approved orders of each service; the
# others run a deterministic 1-in-STRIDE slice of the shapes (rotating by order and leaf),
# so that every shape still meets many scenarios and the test stays well under a minute.
FULL_PER_SERVICE = 2
STRIDE = 2

_BUILDABLE = ("Condition", "Observation", "Procedure", "Device", "AllergyIntolerance")
_CODE_SYSTEMS = (ICD10CM, SNOMED, RXNORM, "http://www.ama-assn.org/go/cpt", LOINC)
_LAB_UNITS: dict[str, tuple[str, tuple[tuple[str, float], ...]]] = {
    "VS-LAB-INR": ("{INR}", (("{ratio}", 1.0),)),
    "VS-LAB-PLATELETS": ("10*3/uL", (("10*9/L", 1.0), ("/uL", 1000.0))),
    "VS-LAB-HBA1C": ("%", ()),
    "VS-LAB-GLUCOSE": ("mg/dL", (("mmol/L", 1 / 18.016),)),
}


def _evaluate(scenario: Scenario, record: Sequence[Mapping[str, Any]]) -> dict[str, OrderDecision]:
    decisions = run_scenario(replace(scenario, record=tuple(record)), CAREPATHS)
    return {d.order_ref: d for d in decisions}


BASELINE = {s.name: _evaluate(s, s.record) for s in SCENARIOS}


# --- the CarePath's non-indication leaves -------------------------------------------------


def _leaves(node: Node, carepath: CarePath) -> Iterator[Leaf]:
    if isinstance(node, Leaf):
        yield node
    elif isinstance(node, Group):
        for child in node.children:
            yield from _leaves(child, carepath)
    elif isinstance(node, Ref):
        yield from _leaves(carepath.nodes[node.target], carepath)


def _forced(node: CriterionResult, leaf_id: str) -> Tri:
    """The node's result had the leaf been met, every other leaf as evaluated."""
    if node.logic == "leaf":
        return Tri.MET if node.id == leaf_id else node.result
    values = [_forced(child, leaf_id) for child in node.children]
    if node.logic == "all":
        return all_of(values)
    if node.logic == "any":
        return any_of(values)
    if node.logic == "not":
        return values[0].negate()
    return values[0]


def _representatives(carepath: CarePath, value_sets: Sequence[str]) -> list[Mapping[str, str]]:
    """One member per code system (exact members first), in the CarePath's order."""
    rows = [row for vs in value_sets for row in carepath.value_sets[vs].members]
    rows.sort(key=lambda row: row.get("match", "exact") != "exact")
    chosen: dict[str, Mapping[str, str]] = {}
    for row in rows:
        system = row["system"]
        if (system in _CODE_SYSTEMS or "Thesaurus" in system) and system not in chosen:
            chosen[system] = row
    return list(chosen.values())


def findings_for(leaf: Leaf, carepath: CarePath, patient: str, as_of: date) -> list[Finding]:
    """Findings that make the leaf's statement hold (empty for leaves the record cannot make present)."""
    args = leaf.args
    base = {"patient": patient, "as_of": as_of, "lookback_days": args.get("lookbackDays")}
    if leaf.op == "coded_finding":
        types = tuple(t for t in (args.get("resourceTypes") or _BUILDABLE) if t in _BUILDABLE)
        return [
            Finding("coded", r["system"], r["code"], r.get("display") or r["code"], types, **base)
            for r in _representatives(carepath, args.get("valueSets") or ())
        ]
    if leaf.op == "medication_exposure":
        rows = [r for vs in args["valueSets"] for r in carepath.value_sets[vs].members if r["system"] == RXNORM]
        rows.sort(key=lambda r: -len(shapes.TERMINOLOGY.products.get(r["code"], ())))  # products known first
        return [
            Finding("medication", RXNORM, r["code"], r.get("display") or r["code"], ("MedicationRequest",), **base)
            for r in rows[:2]
        ]
    if leaf.op == "lab_value":
        vs = args["valueSets"][0]
        row = next(r for r in carepath.value_sets[vs].members if r["system"] == LOINC)
        unit, alt = _LAB_UNITS.get(vs, ("", ()))
        threshold, comparator = float(args["value"]), args["comparator"]
        value = round(threshold * (1.6 if ">" in comparator else 0.5), 1)
        value = int(value) if value.is_integer() else value
        return [
            Finding(
                "lab",
                LOINC,
                row["code"],
                row.get("display") or row["code"],
                ("Observation",),
                value=value,
                unit=unit,
                alt_units=alt,
                comparator=comparator,
                **base,
            )
        ]
    if leaf.op == "observation_value_code":
        code = next(r for vs in args["codeValueSets"] for r in carepath.value_sets[vs].members if r["system"] == LOINC)
        positive = next(r for vs in args["valueValueSets"] for r in carepath.value_sets[vs].members)
        return [
            Finding(
                "result",
                LOINC,
                code["code"],
                code.get("display") or code["code"],
                ("Observation",),
                value_system=positive["system"],
                value_code=positive["code"],
                value_display=positive.get("display", ""),
                **base,
            )
        ]
    return []  # attestations, order codes, gender, procedure timing: not a record finding


# --- the approved orders and what to inject into them ----------------------------------------


@dataclass(frozen=True)
class Target:
    """One non-indication leaf of one auto-approved order."""

    scenario: Scenario
    order_ref: str
    service: str
    leaf: Leaf
    findings: tuple[Finding, ...]


def _targets() -> Iterator[Target]:
    carepath = CAREPATHS[0]
    for scenario in SCENARIOS:
        for ref, decision in BASELINE[scenario.name].items():
            if not decision.auto_approval or decision.service_id is None:
                continue
            service = carepath.service(decision.service_id)
            node = service.groups.get("nonIndications")
            if node is None:
                continue
            root = next(r for r in decision.criteria if r.id == node.id and r.kind == "non-indication")
            as_of = date.fromisoformat(decision.evaluation_date)
            patient = f"Patient/{patient_id(scenario)}"
            for leaf in {leaf.id: leaf for leaf in _leaves(node, carepath)}.values():
                if _forced(root, leaf.id) is Tri.NOT_MET:
                    continue  # e.g. pregnancy for a male patient, anticoagulant with a documented hold plan
                if _negated_in(leaf, scenario, carepath):
                    continue  # a "not pregnant" record would legitimately supersede an older shape of the finding
                found = findings_for(leaf, carepath, patient, as_of)
                if found:
                    yield Target(scenario, ref, service.id, leaf, tuple(found))


def _negated_in(leaf: Leaf, scenario: Scenario, carepath: CarePath) -> bool:
    """Return True when the record holds a code of the leaf's negating value sets."""
    negating = tuple(leaf.args.get("negatingValueSets") or ())
    if not negating:
        return False
    matcher = carepath.matcher(negating)
    record = PatientRecord(scenario.record, patient_id(scenario), terminology_for(CAREPATHS))
    return any(matcher.first_match(e.codes | e.value_codes) for e in record.entries("Condition", "Observation"))


# Shapes the reader cannot take as proof: not understood, suspected, not final, or a value it cannot read.
# For these the service asks (one focused question), so a documentation answer already in the record
# legitimately settles them; a decisive shape must win over any answer.
_DOUBT_WORDS = (
    "local-code",
    "text-only",
    "display-only",
    "code-without-system",
    "provisional",
    "differential",
    "unconfirmed",
    "preliminary",
    "unknown-status",
    "unknown-clinical-status",
    "not-numeric",
    "unresolved",
    "unknown-rxnorm",
    "reference-display-only",
    "interpretation-only",
    "comparator",
    "no-unit",
    "lab:value-integer",  # a lab number with no unit: 40 platelets could be 40 or 40,000 per µL
    "lab:value-string-numeric",  # likewise, a number in text with no unit
)


def _doubtful(shape: shapes.Shape) -> bool:
    return not shape.understood or any(word in shape.name for word in _DOUBT_WORDS)


def _answered(target: Target) -> bool:
    """Whether the scenario's record already answers a question that settles the leaf."""
    links = set(target.leaf.questions) | ({target.leaf.answer.link_id} if target.leaf.answer else set())
    for resource in target.scenario.record:
        if resource.get("resourceType") != "QuestionnaireResponse":
            continue
        stack = list(resource.get("item") or [])
        while stack:
            item = stack.pop()
            if item.get("linkId") in links and item.get("answer"):
                return True
            stack.extend(item.get("item") or [])
    return False


TARGETS = list(_targets())


def _sampled(targets: Sequence[Target]) -> Iterator[tuple[Target, Finding, shapes.Shape, list[dict[str, Any]]]]:
    seen: Counter[str] = Counter()
    full: set[str] = set()
    for target in targets:
        key = f"{target.scenario.name}|{target.order_ref}"
        if key not in full and seen[target.service] < FULL_PER_SERVICE:
            seen[target.service] += 1
            full.add(key)
        offset = zlib.crc32(f"{key}|{target.leaf.id}".encode()) % STRIDE
        for finding in target.findings:
            answered = _answered(target)
            for index, (shape, resources) in enumerate(shapes.shapes_for(finding)):
                if answered and _doubtful(shape):
                    continue  # the clinician's answer settles what the record cannot prove
                if key in full or index % STRIDE == offset:
                    yield target, finding, shape, resources


def _summary(line: str) -> None:
    shapes.SUMMARY.append(line)


def _flip_report(title: str, flips: list[str], counts: Counter[str]) -> str:
    by_count = ", ".join(f"{name} {n}" for name, n in counts.most_common())
    listed = "\n".join(flips[:MAX_LISTED])
    more = f"\n... and {len(flips) - MAX_LISTED} more" if len(flips) > MAX_LISTED else ""
    return f"{title}\nby shape: {by_count}\n{listed}{more}"


def test_there_are_approved_orders_to_attack() -> None:
    assert len({(t.scenario.name, t.order_ref) for t in TARGETS}) >= 50
    assert {t.service for t in TARGETS} >= {"mri", "physical-therapy", "ct-ctm", "esi", "facet-initial", "rfa"}


def test_no_shape_of_a_present_non_indication_is_auto_approved() -> None:
    flips: list[str] = []
    counts: Counter[str] = Counter()
    variants = 0
    used: set[str] = set()
    for target, finding, shape, resources in _sampled(TARGETS):
        variants += 1
        used.add(shape.name)
        decision = _evaluate(target.scenario, [*target.scenario.record, *resources])[target.order_ref]
        if decision.auto_approval:
            counts[shape.name] += 1
            flips.append(
                f"{target.service.upper()}/{target.leaf.id} × {shape.name} ({finding.code}) approved "
                f"Scenario {target.scenario.name}"
            )
    orders = len({(t.scenario.name, t.order_ref) for t in TARGETS})
    _summary(
        f"shape injection: {variants:,} variants ({len(used)} shapes, {len(TARGETS)} leaf targets, "
        f"{orders} approved orders; all shapes for {FULL_PER_SERVICE} orders per service, 1 in {STRIDE} "
        f"for the rest), {len(flips):,} flips"
    )
    assert not flips, _flip_report(f"{len(flips)} injected non-indications were auto-approved", flips, counts)


def test_reencoded_records_get_the_same_decision() -> None:
    flips: list[str] = []
    counts: Counter[str] = Counter()
    variants = 0
    for scenario in SCENARIOS:
        before = BASELINE[scenario.name]
        for name, reencode in shapes.REENCODINGS.items():
            record = reencode(scenario.record)
            if not shapes.changed(scenario.record, record):
                continue
            variants += 1
            after = _evaluate(scenario, record)
            for ref, old in before.items():
                new = after[ref]
                diff = _difference(old, new)
                if diff:
                    counts[name] += 1
                    flips.append(f"{name}: Scenario {scenario.name} {ref}: {diff}")
    _summary(f"re-encoding: {variants:,} variants ({len(shapes.REENCODINGS)} re-encodings), {len(flips):,} flips")
    assert not flips, _flip_report(f"{len(flips)} re-encodings changed a decision", flips, counts)


def _difference(old: OrderDecision, new: OrderDecision) -> str:
    if old.outcome is not new.outcome:
        return f"outcome {old.outcome.value} -> {new.outcome.value}"
    if old.auto_approval != new.auto_approval:
        return f"autoApproval {old.auto_approval} -> {new.auto_approval}"
    was, now = old.results_by_id(), new.results_by_id()
    changed = [f"{k} {was[k].value}->{now.get(k, Tri.UNKNOWN).value}" for k in was if was[k] is not now.get(k)]
    changed += [f"{k} new" for k in now if k not in was]
    return ", ".join(changed[:5])


# --- 4. no auto-approval rests on an answer the record contradicts (product-decisions.md §7) ---

_POS_ANSWER = {"11": "office", "19": "outpatient-hospital", "22": "outpatient-hospital", "24": "asc", "12": "home"}
_POS_ANSWER |= {"21": "inpatient", "23": "emergency"}


@dataclass(frozen=True)
class Conflict:
    """An item whose answer the record already states, for one approved order."""

    scenario: Scenario
    order_ref: str
    service: str
    link_id: str
    fact: str
    contradictions: st.SearchStrategy[dict[str, Any]]

    def __repr__(self) -> str:
        return f"Conflict({self.scenario.name}, {self.order_ref}, {self.link_id}: {self.fact})"


def _asked(service_id: str) -> set[str]:
    """Questionnaire items a service reads: its leaves' answers and questions."""
    carepath = CAREPATHS[0]
    asked: set[str] = set()
    for node in carepath.service(service_id).groups.values():
        for leaf in _leaves(node, carepath):
            asked |= set(leaf.questions) | ({leaf.answer.link_id} if leaf.answer else set())
    return asked


def _integers_except(value: float, low: int, high: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.integers(low, high).filter(lambda n: n != value).map(lambda n: {"valueInteger": n})


def _conflicts_of(scenario: Scenario, decision: OrderDecision) -> Iterator[Conflict]:
    carepath = CAREPATHS[0]
    asked = _asked(str(decision.service_id))
    as_of = date.fromisoformat(decision.evaluation_date)
    raw = next(o for o in scenario.orders if f"{o['resourceType']}/{o['id']}" == decision.order_ref)
    order = read_order(raw, 0)
    common = (scenario, decision.order_ref, str(decision.service_id))
    record = PatientRecord(scenario.record, patient_id(scenario), terminology_for(CAREPATHS))
    birth = parse_date((record.patient or {}).get("birthDate"))
    if birth and "hx.adult" in asked:
        adult = age_in_years(birth, as_of) >= 18
        yield Conflict(*common, "hx.adult", f"born {birth}", st.just({"valueBoolean": not adult}))
    ctx = SimpleNamespace(order=order)  # requested reads only the order
    for link, measure in (("pt.visits-requested", "visits"), ("pt.weeks-requested", "weeks")):
        stated = requested(ctx, measure)  # type: ignore[arg-type]
        if stated is not None and link in asked:
            yield Conflict(*common, link, f"order states {stated:g} {measure}", _integers_except(stated, 1, 60))
    for code in sorted(c for _, c in order.location_codes):
        if code in _POS_ANSWER and "svc.site" in asked:
            others = sorted(set(_POS_ANSWER.values()) - {_POS_ANSWER[code]})
            values = st.sampled_from(others).map(lambda a: {"valueCoding": {"code": a}})
            yield Conflict(*common, "svc.site", f"order place of service {code}", values)
    matcher = carepath.matcher(tuple(carepath.facts["painScores"]["valueSets"]))
    scores = [
        e
        for e in record.entries("Observation")
        if e.quantity and e.start and matcher.first_match(e.codes) and 0 <= (as_of - e.start).days <= 7
    ]
    link = carepath.facts["conservativeCare"]["answers"]["painNow"]
    if scores and link in asked:
        latest = max(scores, key=lambda e: (e.start, e.ref))
        assert latest.quantity is not None
        fact = f"pain {latest.quantity.value:g} recorded {latest.start} in {latest.ref}"
        yield Conflict(*common, link, fact, _integers_except(latest.quantity.value, 0, 10))


CONFLICTS = [
    c
    for s in SCENARIOS
    for d in BASELINE[s.name].values()
    if d.auto_approval and d.service_id
    for c in _conflicts_of(s, d)
]


def _response(conflict: Conflict, answer: Mapping[str, Any]) -> dict[str, Any]:
    carepath = CAREPATHS[0]
    as_of = BASELINE[conflict.scenario.name][conflict.order_ref].evaluation_date
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-contradicting",
        "status": "completed",
        "questionnaire": f"{carepath.questionnaire_base}/{carepath.id}-{conflict.service}",
        "subject": {"reference": f"Patient/{patient_id(conflict.scenario)}"},
        "authored": f"{as_of}T23:59:00Z",
        "item": [{"linkId": conflict.link_id, "answer": [dict(answer)]}],
    }


def test_there_are_record_facts_to_contradict() -> None:
    assert {c.link_id for c in CONFLICTS} >= {"hx.adult", "svc.site", "pt.visits-requested"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(case=st.sampled_from(CONFLICTS).flatmap(lambda c: st.tuples(st.just(c), c.contradictions)))
def test_no_auto_approval_rests_on_an_answer_the_record_contradicts(case: tuple[Conflict, dict[str, Any]]) -> None:
    conflict, answer = case
    record = [*conflict.scenario.record, _response(conflict, answer)]
    decision = _evaluate(conflict.scenario, record)[conflict.order_ref]
    assert not decision.auto_approval, (
        f"{conflict.service.upper()} approved Scenario {conflict.scenario.name} with {conflict.link_id} = "
        f"{answer} although the record states it ({conflict.fact})"
    )
