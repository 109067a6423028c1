"""Evaluate the draft orders of one request against CarePaths: the engine's entry point.

This module holds the order of work for one call: each order read like the
record, decided as of its date (product-decisions.md §5) by the CarePath and
service that govern it (:mod:`~cds_server.engine.routing`), its criteria decided
(:mod:`~cds_server.engine.criteria`: the one place that combines record
evidence, answers and silence for a leaf) and turned into an outcome
(:mod:`~cds_server.engine.outcome`), and its alternatives kept only when this
record would not refuse them. Everything an order's decisions share (the
record, its index, the answers) is built once per call (:class:`_Shared`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any
from weakref import WeakKeyDictionary

from cds_server.engine.context import EvalContext
from cds_server.engine.criteria import evaluate
from cds_server.engine.model import CarePath, Leaf, Node, Ref, Service
from cds_server.engine.operators import REGISTRY
from cds_server.engine.outcome import decide_outcome
from cds_server.engine.result import OrderDecision, Outcome
from cds_server.engine.routing import cohort, recognises, route, ungoverned
from fhir_mappings.codes import concept_codes
from fhir_mappings.orders import Order
from fhir_mappings.questionnaire import Answers, answered_canonical
from fhir_mappings.record import PatientRecord


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
        tuple(carepaths),
        record,
        record_available,
        {cp.id: _answers_for(cp, record) for cp in carepaths},
    )
    orders = [_read_with(record, order) for order in orders]
    decisions = []
    for order in orders:
        others = tuple(o for o in orders if o is not order)
        decision = _decide_order(shared, order, others, call_date)

        def verdict(proposed: Order, others: tuple[Order, ...] = others, basis: Order = order) -> Outcome:
            shared.proposals[proposed.ref] = basis
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


def _answers_for(carepath: CarePath, record: PatientRecord) -> Answers:
    """This CarePath's answers; a response to it whose status is not understood makes what it may say unreadable."""
    return Answers(
        _responses_for(carepath, record.questionnaire_responses),
        carepath.answer_kinds,
        _responses_for(carepath, record.unreadable_responses),
    )


def _responses_for(carepath: CarePath, responses: list[Any]) -> list[Any]:
    """Responses to this CarePath's questionnaires, and to this version of them (or unversioned).

    Its questionnaires are exactly ``{canonicalBase}/{carepath id}-{service id}``; two CarePaths
    may share a base, linkIds and even an id prefix (``pain`` and ``pain-peds``), so
    only an exact canonical counts, or one guideline's answers would count for another's.
    """
    base = carepath.questionnaire_base.rstrip("/")
    own = {f"{base}/{carepath.id}-{service.id}" for service in carepath.services}
    found = []
    for qr in responses:
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
    """What every order of one request is decided against: the CarePaths, the record and its answers.

    It also keeps each order's evaluation context, so that an alternative proposed for an order
    (the same order with another code, ``_proposed``) starts from what was derived and decided for
    it: ``proposals`` names the order each proposal was made from.
    """

    carepaths: tuple[CarePath, ...]
    record: PatientRecord
    record_available: bool
    answers_by_cp: dict[str, Answers]
    contexts: dict[tuple[str, str, date], EvalContext] = field(default_factory=dict)
    proposals: dict[str, Order] = field(default_factory=dict)

    def context(self, cp: CarePath, order: Order, others: tuple[Order, ...], as_of: date) -> EvalContext:
        ctx = EvalContext(cp, self.record, self.answers_by_cp[cp.id], order, others, as_of, self.record_available)
        basis = self.proposals.get(order.ref)
        seed = self.contexts.get((basis.ref, cp.id, as_of)) if basis is not None else None
        if seed is not None and seed.order is basis and seed.other_orders is others:
            _reuse(seed, ctx)
        ctx.brief = basis is not None  # a proposal's decision is read for its outcome only
        self.contexts[(order.ref, cp.id, as_of)] = ctx
        return ctx


def _reuse(seed: EvalContext, ctx: EvalContext) -> None:
    """Start a proposal's evaluation from what its order's evaluation derived and decided.

    A proposal differs from its order only in its code (``_proposed``: the same reasons, body
    site, quantity, dates and encounter, the same record, answers and date), and every fact and
    every operator but those that read the order's code (``Operator.reads_order_code``) decides
    the same for both; criteria that read the code, and the groups above them, are decided anew.
    Its decision is used for its outcome only, so the order's references in the reused
    explanations do not show.
    """
    ctx.cache.update(seed.cache)
    blind = _code_blind(seed.carepath)
    ctx.memo.update((key, result) for key, result in seed.memo.items() if key[0] in blind)
    ctx.findings.update((leaf_id, found) for leaf_id, found in seed.findings.items() if leaf_id in blind)


_CODE_BLIND: WeakKeyDictionary[CarePath, frozenset[str]] = WeakKeyDictionary()


def _code_blind(cp: CarePath) -> frozenset[str]:
    """The ids of the CarePath's criteria whose result does not depend on the order's own code."""
    known = _CODE_BLIND.get(cp)
    if known is not None:
        return known
    reads: dict[str, bool] = {}

    def reads_code(node: Node) -> bool:
        if node.id not in reads:
            if isinstance(node, Leaf):
                reads[node.id] = REGISTRY[node.op].reads_order_code
            elif isinstance(node, Ref):
                reads[node.id] = reads_code(cp.nodes[node.target])
            else:
                reads[node.id] = any(reads_code(child) for child in node.children)
        return reads[node.id]

    for service in cp.services:
        for node in (*service.groups.values(), *([service.selection] if service.selection else [])):
            reads_code(node)
    for node in cp.nodes.values():
        reads_code(node)
    blind = frozenset(node_id for node_id, reads_it in reads.items() if not reads_it)
    _CODE_BLIND[cp] = blind
    return blind


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
        recognised = [(cp, s, why) for cp in carepaths for s in cp.services if (why := recognises(s, order))]
        candidates = [(cp, s) for cp, s, _ in recognised]
        how = recognised[0][2] if recognised else ""
    if not candidates:
        return ungoverned(order, as_of)
    decision = _decide_candidates(shared, candidates, order, others, as_of)
    if how:
        decision.notes.append(f"The order carries no code the CarePath lists; it was read as {how}.")
    if how.endswith("”") and decision.auto_approval:
        # Words can be read more than one way: a service told from text alone is reviewed, not authorized.
        decision.auto_approval = False
        decision.notes.append("It was identified from its text only, so no authorization is issued at ordering.")
    return decision


def _decide_candidates(
    shared: _Shared, candidates: list[tuple[CarePath, Service]], order: Order, others: tuple[Order, ...], as_of: date
) -> OrderDecision:
    for cp in dict.fromkeys(cp for cp, _ in candidates):
        ctx = shared.context(cp, order, others, as_of)
        in_cohort, why = cohort(ctx)
        services = [s for c, s in candidates if c is cp]
        if in_cohort:
            return _decide_in_carepath(ctx, services, why)
    # Outside every cohort: still name the service the order is for when it can be told (for the audit).
    cp = candidates[0][0]
    ctx = shared.context(cp, order, others, as_of)
    service, _, _ = route(ctx, [s for c, s in candidates if c is cp])
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


def _decide_in_carepath(ctx: EvalContext, services: list[Service], cohort_reason: str) -> OrderDecision:
    cp = ctx.carepath
    chosen, routing, questions = route(ctx, services)
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
    roots = [evaluate(node, ctx, kind, ctx.memo) for kind, node in chosen.groups.items()]
    return decide_outcome(ctx, chosen, roots, routing, cohort_reason)
