"""Evaluate draft orders against CarePaths: routing, criteria, outcome, explanation.

One place decides how record evidence, questionnaire answers and silence
combine for a leaf criterion (:func:`_decide_leaf`), and one place turns
criteria into a service outcome (:func:`_outcome`), following
product-decisions.md §1-§3.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from cds_server.engine import facts
from cds_server.engine.context import EvalContext
from cds_server.engine.logic import Tri, all_of, any_of, compare
from cds_server.engine.model import GROUP_KINDS, REQUEST_KINDS, AnswerSpec, CarePath, Group, Leaf, Node, Ref, Service
from cds_server.engine.operators import FALSE, REGISTRY, SUGGESTIVE, TRUE, Finding
from cds_server.engine.prefill import prefill
from cds_server.engine.result import CriterionResult, OrderDecision, Outcome
from fhir_mappings.codes import Code, arr, coding_key, concept_codes
from fhir_mappings.orders import Order
from fhir_mappings.questionnaire import Answers, answered_canonical
from fhir_mappings.record import IGNORED, PatientRecord, status_reading

_KIND_LABEL = {
    "population": "population",
    "indications": "indication",
    "subsequent": "subsequent-request",
    "frequency": "frequency",
    "siteOfService": "site-of-service",
    "nonIndications": "non-indication",
    "selection": "selection",
}


def evaluate_orders(
    carepaths: Sequence[CarePath],
    orders: Sequence[Order],
    record: PatientRecord,
    call_date: date,
    record_available: bool = True,
) -> list[OrderDecision]:
    """Decide every draft order of one request.

    Each order is evaluated as of its own ``authoredOn`` date, else ``call_date``
    (product-decisions.md §5). Orders share the record, and each sees the
    others (a CT myelogram is recognised by its companion order).
    """
    shared = _Shared(
        tuple(carepaths), record, record_available, {cp.id: Answers(_responses_for(cp, record)) for cp in carepaths}
    )
    orders = [_read_with(record, order) for order in orders]
    decisions = []
    for order in orders:
        others = tuple(o for o in orders if o is not order)
        decision = _decide_order(shared, order, others, call_date)

        def verdict(proposed: Order, others: tuple[Order, ...] = others) -> Outcome:
            return _decide_order(shared, proposed, others, call_date).outcome

        decision.alternatives = _worth_offering(decision.alternatives, order, verdict)
        decisions.append(decision)
    return decisions


_REFUSED = (Outcome.NOT_MET, Outcome.CONTRAINDICATED)


def _read_with(record: PatientRecord, order: Order) -> Order:
    """The order with its reason, body-site and place codes classified like the record's (a SNOMED finding
    as its reason carries its ICD-10-CM class), so cohort and region rules read every coding EHRs send."""
    return replace(
        order,
        reason_codes=record.classified(order.reason_codes),
        body_site=record.classified(order.body_site),
        location_codes=record.classified(order.location_codes),
    )


def decision_date(order: Order, call_date: date) -> tuple[date, str]:
    """The date an order is decided as of (product-decisions.md §5), and a note when it is not ``authoredOn``.

    ``authoredOn`` when it is not after the call; a future ``authoredOn`` never moves the
    decision (it would let windows and waiting periods be met by post-dating an order).
    """
    authored = order.authored_on
    if authored is None:
        return call_date, ""
    if authored > call_date:
        return call_date, (
            f"The order is dated {authored.isoformat()}, after today; it was decided as of {call_date.isoformat()}."
        )
    return authored, ""


def _worth_offering(alternatives: list[dict[str, Any]], order: Order, verdict: Any) -> list[dict[str, Any]]:
    """Keep only the alternatives whose proposed order this same record would not refuse.

    A suggestion the clinician accepts becomes an order the payer then decides; proposing
    one the guideline already rules out for this patient (physical therapy after therapy
    that did not help) sends the clinician round in a circle.
    """
    kept = []
    for alt in alternatives:
        code = alt.get("code")
        proposes_order = alt.get("kind") in ("replace", "companion") and isinstance(code, dict)
        if proposes_order and verdict(_proposed(order, code)) in _REFUSED:
            continue
        kept.append(alt)
    return kept


def _proposed(order: Order, code: dict[str, Any]) -> Order:
    """The order as it would be with the alternative's code (reason, dates and site kept)."""
    coding = {"coding": [code]}
    return replace(
        order,
        ref=f"{order.ref}#proposed",
        codes=frozenset(concept_codes(coding)),
        code_text=str(code.get("display") or ""),
        raw={**order.raw, "code": coding},
    )


def _responses_for(carepath: CarePath, record: PatientRecord) -> list[Any]:
    """Responses to this CarePath's questionnaires, and to this version of them (or unversioned).

    Its questionnaires are exactly ``{canonicalBase}/{carepath id}-{service id}``; two CarePaths
    may share a base, linkIds and even an id prefix (``pain`` and ``pain-peds``), so
    only an exact canonical counts, or one guideline's answers would count for another's.
    """
    base = carepath.questionnaire_base.rstrip("/")
    own = {f"{base}/{carepath.id}-{service.id}" for service in carepath.services}
    found = []
    for qr in record.questionnaire_responses:
        canonical = answered_canonical(qr)  # an adaptive response answers the Questionnaire it derives from
        if not isinstance(canonical, str):
            continue
        url, _, version = canonical.partition("|")
        if url not in own or (version and version != carepath.version):
            continue  # another guideline's questions, or another version's: not evidence for this one
        found.append(qr)
    return found


@dataclass(frozen=True)
class _Shared:
    """What every order of one request is decided against: the CarePaths, the record and its answers."""

    carepaths: tuple[CarePath, ...]
    record: PatientRecord
    record_available: bool
    answers_by_cp: dict[str, Answers]

    def context(self, cp: CarePath, order: Order, others: tuple[Order, ...], as_of: date) -> EvalContext:
        return EvalContext(cp, self.record, self.answers_by_cp[cp.id], order, others, as_of, self.record_available)


def _decide_order(shared: _Shared, order: Order, others: tuple[Order, ...], call_date: date) -> OrderDecision:
    as_of, date_note = decision_date(order, call_date)
    decision = _decide_as_of(shared, order, others, as_of)
    if date_note:
        decision.notes.insert(0, date_note)
    return decision


def _decide_as_of(shared: _Shared, order: Order, others: tuple[Order, ...], as_of: date) -> OrderDecision:
    carepaths = shared.carepaths
    candidates = [(cp, s) for cp in carepaths for s in cp.services if s.order_codes.first_match(order.codes)]
    how = ""
    if not candidates:
        recognised = [(cp, s, why) for cp in carepaths for s in cp.services if (why := _recognises(s, order))]
        candidates = [(cp, s) for cp, s, _ in recognised]
        how = recognised[0][2] if recognised else ""
    if not candidates:
        return _ungoverned(order, as_of)
    decision = _decide_candidates(shared, candidates, order, others, as_of)
    if how:
        decision.notes.append(f"The order carries no code the CarePath lists; it was read as {how}.")
    if how.endswith("”") and decision.auto_approval:
        # Words can be read more than one way: a service told from text alone is reviewed, not authorized.
        decision.auto_approval = False
        decision.notes.append("It was identified from its text only, so no authorization is issued at ordering.")
    return decision


def governs(carepaths: Sequence[CarePath], order: Order) -> bool:
    """Whether some CarePath service is for this order: by its codes, or recognised by other codings or text.

    The pipeline reads the patient's history only for governed orders, so this must be the same
    test the decision uses: an order recognised from its text decided on an unread record would
    find every non-indication "not recorded".
    """
    return any(s.order_codes.first_match(order.codes) or _recognises(s, order) for cp in carepaths for s in cp.services)


def _recognises(service: Service, order: Order) -> str:
    """How an order without the service's codes names it (other codings, or words in its text), else ""."""
    spec = service.recognition
    if spec is None:
        return ""
    hit = spec.matcher.first_match(order.codes)
    if hit:
        return f"{service.title} from its code {hit[1]}"
    text = order.code_text.lower()
    if spec.text and all(any(_has_words(text, w) for w in group) for group in spec.text):
        return f"{service.title} from its text “{order.code_text}”"
    return ""


def _has_words(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", text) is not None


def _ungoverned(order: Order, as_of: date) -> OrderDecision:
    """No CarePath governs the order: "not governed" only when its billing code says what it is (§8)."""
    if not order.billing_codes:
        shown = order.code_text or ", ".join(c[1] for c in sorted(order.codes)) or "no code"
        return OrderDecision(
            order.ref,
            Outcome.NOT_APPLICABLE,
            f"The order ({shown}) carries no billing code and names no service a CarePath covers",
            as_of.isoformat(),
            applicability="unidentified",
        )
    codes = ", ".join(f"{c[1]}" for c in sorted(order.billing_codes))
    return OrderDecision(
        order.ref,
        Outcome.NOT_APPLICABLE,
        f"No CarePath governs {codes}",
        as_of.isoformat(),
        applicability="no-carepath",
    )


def _decide_candidates(
    shared: _Shared, candidates: list[tuple[CarePath, Service]], order: Order, others: tuple[Order, ...], as_of: date
) -> OrderDecision:
    for cp in dict.fromkeys(cp for cp, _ in candidates):
        ctx = shared.context(cp, order, others, as_of)
        in_cohort, why = _cohort(ctx)
        services = [s for c, s in candidates if c is cp]
        if in_cohort:
            return _decide_in_carepath(ctx, services, why)
    # Outside every cohort: still name the service the order is for when it can be told (for the audit).
    cp = candidates[0][0]
    ctx = shared.context(cp, order, others, as_of)
    service, _, _ = _route(ctx, [s for c, s in candidates if c is cp])
    return OrderDecision(
        order.ref,
        Outcome.NOT_APPLICABLE,
        f"Diagnosis is outside the {cp.title} CarePath cohort",
        as_of.isoformat(),
        cp.id,
        cp.version,
        service.id if service else None,
        service.title if service else None,
        applicability="outside-cohort",
    )


def _cohort(ctx: EvalContext) -> tuple[bool, str]:
    """Return whether the order's diagnosis is in the cohort (product-decisions.md §3)."""
    order = ctx.order
    reasons: set[Code] = set(order.reason_codes)
    refuted = 0
    for ref in order.reason_refs:
        raw = ctx.record.resolve(ref) or _contained(order, ref)
        if raw and status_reading(raw)[0] == IGNORED:
            refuted += 1  # refuted or entered in error: never a reason (product-decisions.md §1)
        elif raw:
            reasons |= ctx.record.read_concept(raw.get("code"))[0]
    cohort = ctx.carepath.cohort
    if reasons:
        hit = cohort.first_match(reasons)
        if hit:
            return True, f"order reason {hit[1]} is in the cohort"
        return False, "order reasons are outside the cohort"
    if refuted and not order.reason_codes:
        return False, "the order's reason is refuted or entered in error"
    for entry in ctx.record.entries("Condition"):
        hit = cohort.first_match(entry.codes)
        if hit and facts.still_active(entry, ctx.as_of) and (entry.start_lo or entry.start or ctx.as_of) <= ctx.as_of:
            return True, f"active diagnosis {hit[1]} in {entry.ref} is in the cohort (the order gives no reason)"
    return False, "no cohort diagnosis on the order or in the record"


def _contained(order: Order, ref: str) -> dict[str, Any] | None:
    if not ref.startswith("#"):
        return None
    for item in arr(order.raw.get("contained")):
        if isinstance(item, dict) and item.get("id") == ref[1:]:
            return item
    return None


def _decide_in_carepath(ctx: EvalContext, services: list[Service], cohort_reason: str) -> OrderDecision:
    cp = ctx.carepath
    chosen, routing, questions = _route(ctx, services)
    if chosen is None:
        ask_kind = any(s.disambiguation and s.disambiguation.link_id in questions for s in services)
        summary = (
            "Say which procedure this order is, so the right criteria apply"
            if ask_kind
            else "Document earlier procedures, so the initial or the subsequent criteria apply"
        )
        return OrderDecision(
            ctx.order.ref,
            Outcome.DOCUMENTATION_NEEDED,
            summary,
            ctx.as_of.isoformat(),
            cp.id,
            cp.version,
            applicability=cohort_reason,
            criteria=routing,
            questions=questions,
        )
    memo: dict[tuple[str, str], CriterionResult] = {}
    roots = [_evaluate(node, ctx, kind, memo) for kind, node in chosen.groups.items()]
    return _outcome(ctx, chosen, roots, routing, cohort_reason)


def _route(ctx: EvalContext, services: list[Service]) -> tuple[Service | None, list[CriterionResult], list[str]]:
    """Pick one service: by its selection criterion (initial vs subsequent), then by disambiguation.

    When no single service remains, return the questions that would tell
    them apart: the disambiguation item when the candidates differ in kind,
    and the items of selection criteria that are still unknown.
    """
    routing: list[CriterionResult] = []
    kept = []
    for service in services:
        if service.selection is None:
            kept.append(service)
            continue
        result = _evaluate(service.selection, ctx, "selection", {})
        if result.result is not Tri.NOT_MET:
            kept.append(service)
            routing.append(result)
    if len(kept) == 1:
        return kept[0], _own(routing, kept[0]), []
    kinds = {s.disambiguation.answer_code if s.disambiguation else None for s in kept}
    narrowed = kept
    if len(kinds) > 1:
        picked = [s for s in kept if s.disambiguation and _disambiguated(ctx, s)]
        narrowed = picked or kept
    if len(narrowed) == 1:
        return narrowed[0], _own(routing, narrowed[0]), []
    questions: list[str] = []
    if len({s.disambiguation.answer_code if s.disambiguation else None for s in narrowed}) > 1:
        questions += sorted({s.disambiguation.link_id for s in narrowed if s.disambiguation})
    questions += [q for q in _questions([r for r in routing if r.result is Tri.UNKNOWN]) if q not in questions]
    return None, routing, questions


def _own(routing: list[CriterionResult], service: Service) -> list[CriterionResult]:
    """Keep only the chosen service's own selection result for the explanation."""
    return [r for r in routing if service.selection is not None and r.id == service.selection.id]


def _disambiguated(ctx: EvalContext, service: Service) -> bool:
    spec = service.disambiguation
    if spec is None:
        return False
    answer = ctx.answers.first(spec.link_id)
    if answer is not None:
        return answer.value == spec.answer_code
    text = ctx.order.code_text.lower()

    def has(pattern: str) -> bool:
        return re.search(rf"\b{re.escape(pattern.lower())}\b", text) is not None

    return any(has(p) for p in spec.text_patterns) and not any(has(p) for p in spec.not_patterns)


# --- criteria ----------------------------------------------------------------------


def _evaluate(node: Node, ctx: EvalContext, kind: str, memo: dict[tuple[str, str], CriterionResult]) -> CriterionResult:
    key = (node.id, kind)
    if key not in memo:
        memo[key] = _evaluate_uncached(node, ctx, kind, memo)
    return memo[key]


def _evaluate_uncached(
    node: Node, ctx: EvalContext, kind: str, memo: dict[tuple[str, str], CriterionResult]
) -> CriterionResult:
    if isinstance(node, Leaf):
        return _decide_leaf(node, ctx, kind)
    if isinstance(node, Ref):
        target = _evaluate(ctx.carepath.nodes[node.target], ctx, kind, memo)
        return CriterionResult(
            node.id,
            node.text,
            node.cite,
            _KIND_LABEL[kind],
            target.result,
            f"same criterion as {node.target}: {target.reason}",
            children=[target],
            logic="ref",
        )
    assert isinstance(node, Group)
    children = [_evaluate(child, ctx, kind, memo) for child in node.children]
    values = [c.result for c in children]
    if node.op == "all":
        result = all_of(values)
    elif node.op == "any":
        result = any_of(values)
    else:
        result = values[0].negate()
    return CriterionResult(
        node.id,
        node.text,
        node.cite,
        _KIND_LABEL[kind],
        result,
        _group_reason(node.op, result, children),
        parameters=dict(node.parameters),
        children=children,
        logic=node.op,
    )


def _group_reason(op: str, result: Tri, children: list[CriterionResult]) -> str:
    if op == "not":
        return f"negation of: {children[0].text}"
    deciding = [c for c in children if c.result is result]
    if op == "all" and result is Tri.MET:
        return "all of these are met"
    if op == "any" and result is Tri.NOT_MET:
        return "none of these is met"
    label = {Tri.MET: "met by", Tri.NOT_MET: "not met because of", Tri.UNKNOWN: "unknown because of"}[result]
    return f"{label}: " + "; ".join(c.text for c in deciding[:4])


def _decide_leaf(leaf: Leaf, ctx: EvalContext, kind: str) -> CriterionResult:
    """Combine record evidence, documentation answers and silence for one criterion.

    Order of precedence: decisive evidence that the statement holds; then a
    documentation answer; then decisive evidence that it does not; then
    evidence needing confirmation (unknown); then silence, read by the
    criterion's kind (absent for non-indications, unknown otherwise).
    """
    finding = REGISTRY[leaf.op].fn(ctx, leaf.args)
    answered = _answer(leaf.answer, ctx)
    label = _KIND_LABEL[kind]

    def result(value: Tri, reason: str, evidence: list[str]) -> CriterionResult:
        return CriterionResult(
            leaf.id, leaf.text, leaf.cite, label, value, reason, evidence, list(leaf.questions), dict(leaf.parameters)
        )

    recorded = {TRUE: Tri.MET, FALSE: Tri.NOT_MET}.get(finding.status)
    if recorded is not None and answered is not None and _contradicts(leaf, finding, answered[0], ctx):
        # The record outranks an answer on a fact it states (product-decisions.md §7): the record
        # decides, and the contradiction is named so that no authorization rests on either.
        decided = result(recorded, finding.reason, finding.evidence + [answered[2]])
        decided.conflict = f"{answered[1]}, but the record shows: {finding.reason}"
        return decided
    decided = _precedence(leaf, ctx, kind, finding, answered, result)
    decided.conflict = decided.conflict or finding.conflict
    return decided


def _contradicts(leaf: Leaf, finding: Finding, answered: Tri, ctx: EvalContext) -> bool:
    """Whether a documentation answer contradicts a fact the record states (product-decisions.md §7).

    Not only when it would change the criterion: 20 visits answered for a 12-visit order
    contradicts the order even though both are under the limit.
    """
    if not finding.stated or leaf.answer is None:
        return False
    recorded = Tri.MET if finding.status == TRUE else Tri.NOT_MET
    if answered is not recorded:
        return True
    given = ctx.answers.first(leaf.answer.link_id)
    value = given.value if given is not None else None
    if finding.stated_value is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(float(value) - finding.stated_value) >= 0.5
    question = ctx.carepath.questions.get(leaf.answer.link_id)
    if finding.stated_codes and question is not None and isinstance(value, str):
        meaning = {
            str(option.get("code")): {coding_key(m) for m in arr(option.get("means"))} for option in question.options
        }
        stated = {o for o, codes in meaning.items() if codes & finding.stated_codes}
        return bool(stated) and value not in stated
    return False


def _precedence(
    leaf: Leaf, ctx: EvalContext, kind: str, finding: Finding, answered: Any, result: Any
) -> CriterionResult:
    """Record proof, then an answer, then record disproof, then doubt, then silence."""
    if finding.status == TRUE:
        return result(Tri.MET, finding.reason, finding.evidence)
    if answered is not None:
        return result(answered[0], answered[1], [answered[2]])
    if finding.status == FALSE:
        return result(Tri.NOT_MET, finding.reason, finding.evidence)
    if finding.status == SUGGESTIVE:
        return result(Tri.UNKNOWN, finding.reason, finding.evidence)
    return _silence(leaf, ctx, kind, finding, result)


def _silence(leaf: Leaf, ctx: EvalContext, kind: str, finding: Finding, result: Any) -> CriterionResult:
    policy = leaf.silence or GROUP_KINDS.get(kind, "unknown")
    checked = f" (checked: {finding.checked})" if finding.checked else ""
    if policy == "absent" and ctx.record_available:
        return result(Tri.NOT_MET, f"none recorded{checked}", finding.evidence)
    detail = finding.reason or "not documented"
    return result(Tri.UNKNOWN, f"{detail}{checked}", finding.evidence)


def _answer(spec: AnswerSpec | None, ctx: EvalContext) -> tuple[Tri, str, str] | None:
    """Read the questionnaire answer that decides a leaf, if one was given."""
    if spec is None:
        return None
    answers = ctx.answers.get(spec.link_id)
    if not answers:
        return None
    first = answers[0]
    shown = ", ".join(str(a.value) for a in answers)
    question = ctx.carepath.questions.get(spec.link_id)
    reason = f"answered '{shown}' to “{question.text if question else spec.link_id}”"
    if spec.true_when is not None:
        hit = any(a.value in spec.true_when for a in answers)
        return (Tri.MET if hit else Tri.NOT_MET), reason, first.source
    if spec.compare is not None:
        value = first.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return (Tri.MET if compare(float(value), *spec.compare) else Tri.NOT_MET), reason, first.source
    if spec.weeks_since is not None:
        if not isinstance(first.value, date):
            return None
        weeks = (ctx.as_of - first.value).days / 7.0
        ok = compare(weeks, *spec.weeks_since)
        return (Tri.MET if ok else Tri.NOT_MET), f"{reason} ({weeks:.1f} weeks)", first.source
    if isinstance(first.value, bool):
        return (Tri.MET if first.value else Tri.NOT_MET), reason, first.source
    return None


# --- outcome -----------------------------------------------------------------------


def _outcome(
    ctx: EvalContext, service: Service, roots: list[CriterionResult], routing: list[CriterionResult], cohort: str
) -> OrderDecision:
    kinds = list(service.groups)
    by_kind = dict(zip(kinds, roots, strict=False))
    ni = by_kind.get("nonIndications")
    request = all_of(by_kind[k].result for k in REQUEST_KINDS if k in by_kind)
    if ni is not None and ni.result is Tri.MET:
        outcome, failing = Outcome.CONTRAINDICATED, _deciding(ni, Tri.MET)
    elif request is Tri.NOT_MET:
        outcome = Outcome.NOT_MET
        failing = [i for k in REQUEST_KINDS if k in by_kind for i in _deciding(by_kind[k], Tri.NOT_MET)]
    elif request is Tri.UNKNOWN or (ni is not None and ni.result is Tri.UNKNOWN):
        outcome, failing = Outcome.DOCUMENTATION_NEEDED, []
    else:
        outcome, failing = Outcome.CRITERIA_MET, []
    conflicts = [f"{n.text}: {n.conflict}" for r in routing + roots for n in r.walk() if n.conflict]
    questions = _questions(roots) if outcome is Outcome.DOCUMENTATION_NEEDED else []
    all_nodes = [n for r in roots for n in r.walk()]
    used = sorted({e for n in all_nodes for e in n.evidence if e.startswith("QuestionnaireResponse/")})
    cp = ctx.carepath
    return OrderDecision(
        ctx.order.ref,
        outcome,
        _summary(outcome, service, roots, failing),
        ctx.as_of.isoformat(),
        cp.id,
        cp.version,
        service.id,
        service.title,
        auto_approval=outcome is Outcome.CRITERIA_MET and service.auto_approval and not conflicts,
        conflicts=list(dict.fromkeys(conflicts)),
        applicability=cohort,
        criteria=routing + roots,
        questions=questions,
        failing=failing,
        answers_used=used,
        alternatives=_alternatives(service, outcome, routing + roots) if ctx.record_available else [],
        prefill=prefill(ctx, roots) if outcome is Outcome.DOCUMENTATION_NEEDED else {},
    )


def _alternatives(service: Service, outcome: Outcome, roots: list[CriterionResult]) -> list[dict[str, Any]]:
    """Return the service's alternatives whose conditions hold, for an order that is not approved.

    Only offered on a record that was obtained: "missing" must mean missing, not unseen.
    """
    if outcome is Outcome.CRITERIA_MET:
        return []
    results: dict[str, Tri] = {}
    for root in roots:
        for node in root.walk():
            results.setdefault(node.id, node.result)
    chosen = []
    for alt in service.alternatives:
        hits = [c["criterion"] for c in alt["when"] if results.get(c["criterion"], Tri.UNKNOWN).value in c["results"]]
        holds = bool(hits) if alt.get("match") == "any" else len(hits) == len(alt["when"])
        if holds:
            chosen.append({**alt, "because": hits})
    return chosen


def _deciding(root: CriterionResult, value: Tri) -> list[str]:
    """Return ids of the criteria under ``root`` that decided its ``value``, at the level a reader cites.

    A leaf, a reference and a negation decide as a whole; a group is explained
    by its children that have the same result.
    """
    if root.result is not value:
        return []
    if root.logic in ("leaf", "ref", "not"):
        return [root.id]
    ids = [c.id for c in root.children if c.result is value]
    return ids or [root.id]


def _questions(roots: list[CriterionResult]) -> list[str]:
    """Return the questionnaire items that would settle the unknown criteria, in order."""
    found: dict[str, None] = {}

    def visit(node: CriterionResult) -> None:
        if node.result is not Tri.UNKNOWN:
            return
        for q in node.questions:
            found.setdefault(q, None)
        for child in node.children:
            visit(child)

    for root in roots:
        visit(root)
    return list(found)


def _summary(outcome: Outcome, service: Service, roots: list[CriterionResult], failing: list[str]) -> str:
    texts = {n.id: n.text for r in roots for n in r.walk()}
    names = "; ".join(texts.get(i, i) for i in failing[:3])
    if outcome is Outcome.CRITERIA_MET:
        return f"{service.title}: medical-necessity criteria met"
    if outcome is Outcome.CONTRAINDICATED:
        return f"{service.title}: not appropriate because of {names}"
    if outcome is Outcome.NOT_MET:
        return f"{service.title}: criteria not met ({names})"
    return f"{service.title}: documentation needed to decide"
