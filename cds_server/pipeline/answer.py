"""Stage 5, the answer: cards and system actions from the decided orders, filtered by the call's configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cds_server.engine import CarePath
from cds_server.pipeline import cards
from cds_server.pipeline import coverage_info as ci
from cds_server.pipeline.call import Call, OrderResult, Runtime
from fhir_mappings.orders import Order


def system_actions(call: Call, results: Sequence[OrderResult]) -> list[dict[str, Any]]:
    """One update per in-scope order with new coverage information (CRD resp-29, resp-35)."""
    if not call.option("coverage-info", True):
        return []
    actions = []
    for result in results:
        if not result.new:
            continue
        resource = ci.annotate(result.target.annotated, result.assertion)  # a contained order: its carrier
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        actions.append({"type": "update", "description": f"Add coverage information to {ref}", "resource": resource})
    return actions


def build_cards(runtime: Runtime, call: Call, results: Sequence[OrderResult], base_url: str) -> list[dict[str, Any]]:
    """Cards for every decided order, filtered by the call's configuration (CRD dev-14)."""
    carepaths = {cp.id: cp for cp in runtime.carepaths}
    ctx = cards.CardContext(
        runtime.settings["PAYER_NAME"],
        call.version,
        base_url,
        len(results) > 1,
        lambda assertion_id: runtime.decision_url(base_url, assertion_id),
        _order_names(results, carepaths),
    )
    orders = [r.target.order for r in results]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for result in results:
        decision = result.decision
        if decision is None or decision.carepath_id not in carepaths:
            continue
        carepath = carepaths[decision.carepath_id]
        out += _order_cards(ctx, call, result, carepath, orders, seen)
    return cards.apply_configuration(out, call.configuration)


def _order_cards(
    ctx: cards.CardContext,
    call: Call,
    result: OrderResult,
    carepath: CarePath,
    orders: Sequence[Mapping[str, Any]],
    seen: set[str],
) -> list[dict[str, Any]]:
    """The cards of one decided order: its decision, better or additional orders, and its references."""
    decision, assertion = result.decision, result.assertion
    assert decision is not None
    label = order_label(result.order)
    if decision.applicability == "outside-cohort":
        page = ctx.decision_url(assertion.assertion_id)
        return [cards.outside_cohort_card(ctx, decision, label, carepath, page)]
    expires = assertion.expiry_date.isoformat() if assertion.satisfied_pa_id and assertion.expiry_date else None
    out = [
        cards.decision_card(
            ctx, carepath, decision, label, assertion.satisfied_pa_id, call.service.clinical_documentation, expires
        )
    ]
    others = [o for o in orders if o is not result.target.order]
    for card in cards.alternative_cards(ctx, decision, result.target.order, others, carepath):
        key = cards.suggestion_key(card)
        if key not in seen:  # several orders can point to the same better order
            seen.add(key)
            out.append(card)
    if decision.service_id:
        out.append(cards.reference_card(ctx, carepath, decision, assertion.assertion_id))
    return out


def _order_names(results: Sequence[OrderResult], carepaths: Mapping[str, CarePath]) -> dict[str, str]:
    """What a clinician calls each order: the CarePath's display of its code (never a client's "Unknown")."""
    names = {}
    for result in results:
        carepath = carepaths.get(result.decision.carepath_id) if result.decision else None
        shown = cards.order_display(carepath, result.order) if carepath else None
        if shown:
            names[result.order.ref] = shown
    return names


def order_label(order: Order) -> str:
    """A human label for an order: what it is, and which resource."""
    what = order.code_text or ", ".join(code for _, code in sorted(order.codes)) or order.type
    return f"{what} ({order.ref})"


def answer(runtime: Runtime, call: Call, results: Sequence[OrderResult], base_url: str) -> dict[str, Any]:
    """The response body: the cards, and the system actions when there are any."""
    response: dict[str, Any] = {"cards": build_cards(runtime, call, results, base_url)}
    actions = system_actions(call, results)
    if actions:
        response["systemActions"] = actions
    return response
