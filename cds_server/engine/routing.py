"""Which CarePath and service an order is for, and whether its diagnosis is in the cohort.

A service by its order codes, else recognised from other codings or words in the
order's text; the cohort from the order's reasons, else an active cohort
diagnosis in the record (product-decisions.md §3); among services sharing
codes, the one the selection criterion (initial or subsequent) and
disambiguation pick, or the questions that would tell them apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from cds_server.engine import facts
from cds_server.engine.context import EvalContext
from cds_server.engine.criteria import evaluate
from cds_server.engine.logic import Tri
from cds_server.engine.model import CarePath, Service
from cds_server.engine.outcome import open_questions
from cds_server.engine.result import CriterionResult, OrderDecision, Outcome
from fhir_mappings.codes import Code, arr
from fhir_mappings.orders import Order
from fhir_mappings.record import IGNORED, status_reading


def governs(carepaths: Sequence[CarePath], order: Order) -> bool:
    """Whether some CarePath service is for this order: by its codes, or recognised by other codings or text.

    The pipeline reads the patient's history only for governed orders, so this must be the same
    test the decision uses: an order recognised from its text decided on an unread record would
    find every non-indication "not recorded".
    """
    return any(s.order_codes.first_match(order.codes) or recognises(s, order) for cp in carepaths for s in cp.services)


def recognises(service: Service, order: Order) -> str:
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


def ungoverned(order: Order, as_of: date) -> OrderDecision:
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


def cohort(ctx: EvalContext) -> tuple[bool, str]:
    """Return whether the order's diagnosis is in the cohort (product-decisions.md §3)."""
    order = ctx.order
    reasons: set[Code] = set(order.reason_codes)
    refuted = 0
    for ref in order.reason_refs:
        raw = ctx.record.resolve(ref) or _contained(order, ref)
        if raw and status_reading(raw)[0] == IGNORED:
            refuted += 1  # refuted or entered in error: never a reason (product-decisions.md §1)
        elif raw:
            reasons |= ctx.record.classes(raw.get("code"))
    cohort = ctx.carepath.cohort
    if reasons:
        hit = cohort.first_match(reasons)
        if hit:
            return True, f"order reason {hit[1]} is in the cohort"
        return False, "order reasons are outside the cohort"
    if refuted and not order.reason_codes:
        return False, "the order's reason is refuted or entered in error"
    for entry in ctx.record.entries_matching(("Condition",), cohort, use_values=False):
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


def route(ctx: EvalContext, services: list[Service]) -> tuple[Service | None, list[CriterionResult], list[str]]:
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
        result = evaluate(service.selection, ctx, "selection", {})
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
    questions += [q for q in open_questions([r for r in routing if r.result is Tri.UNKNOWN]) if q not in questions]
    return None, routing, questions


def _own(routing: list[CriterionResult], service: Service) -> list[CriterionResult]:
    """Keep only the chosen service's own selection result for the explanation."""
    return [r for r in routing if service.selection is not None and r.id == service.selection.id]


def _disambiguated(ctx: EvalContext, service: Service) -> bool:
    spec = service.disambiguation
    if spec is None:
        return False
    if ctx.answers.unreadable_source(spec.link_id) is not None:
        return False  # the kind was answered unreadably: not inferred from the text either, so it is asked again
    answer = ctx.answers.first(spec.link_id)
    if answer is not None:
        return answer.value == spec.answer_code
    text = ctx.order.code_text.lower()

    def has(pattern: str) -> bool:
        return re.search(rf"\b{re.escape(pattern.lower())}\b", text) is not None

    return any(has(p) for p in spec.text_patterns) and not any(has(p) for p in spec.not_patterns)
