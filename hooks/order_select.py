"""order-select: orders are picked from a catalogue (a CRD secondary hook; comment on selections only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hooks.base import (
    BUNDLE_SCHEMA,
    CRD_ORDER_TYPES,
    ID_PATTERN,
    REF_PATTERN,
    USER_PATTERN,
    HookService,
    OrderTarget,
    bundle_resources,
    crd_bundle_checks,
    ref_of,
)

CONTEXT_SCHEMA = {
    "type": "object",
    "required": ["userId", "patientId", "selections", "draftOrders"],
    "properties": {
        "userId": {"type": "string", "pattern": USER_PATTERN},
        "patientId": {"type": "string", "pattern": ID_PATTERN},
        "encounterId": {"type": "string", "pattern": ID_PATTERN},
        "selections": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": REF_PATTERN}},
        "draftOrders": BUNDLE_SCHEMA,
    },
}


def find_orders(context: Mapping[str, Any], _read: Callable[[str], Mapping[str, Any] | None]) -> list[OrderTarget]:
    """Only the selected orders are in scope (CRD hook-34)."""
    selected = set(context["selections"])
    return [OrderTarget(r, ref_of(r)) for r in bundle_resources(context["draftOrders"]) if ref_of(r) in selected]


def crd_checks(context: Mapping[str, Any]) -> list[tuple[str, str]]:
    """CRD bundle profile on draftOrders, and every selection must name a draft order."""
    problems = crd_bundle_checks(context.get("draftOrders"), "draftOrders", CRD_ORDER_TYPES)
    refs = {ref_of(r) for r in bundle_resources(context.get("draftOrders"))}
    for i, selection in enumerate(context.get("selections") or []):
        if selection not in refs:
            problems.append((f"selection {selection!r} is not in draftOrders", f"context.selections[{i}]"))
    return problems


SERVICE = HookService(
    id="crd-order-select",
    hook="order-select",
    title="Coverage requirements when orders are selected",
    description=(
        "Early coverage information for the orders just selected, so the clinician sees requirements before "
        "signing. Never asks for clinical documentation (CRD hook-19); that waits for order-sign."
    ),
    context_schema=CONTEXT_SCHEMA,
    token_fields=("userId", "patientId", "encounterId"),
    primary=False,
    clinical_documentation=False,
    orders_field="draftOrders",
    order_statuses=frozenset({"draft"}),
    find_orders=find_orders,
    crd_checks=crd_checks,
)
