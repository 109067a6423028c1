"""order-sign: the clinician signs one or more draft orders (a CRD primary hook)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hooks.base import (
    BUNDLE_SCHEMA,
    CRD_ORDER_TYPES,
    ID_PATTERN,
    USER_PATTERN,
    HookService,
    OrderTarget,
    bundle_resources,
    crd_bundle_checks,
    ref_of,
)

CONTEXT_SCHEMA = {
    "type": "object",
    "required": ["userId", "patientId", "draftOrders"],
    "properties": {
        "userId": {"type": "string", "pattern": USER_PATTERN},
        "patientId": {"type": "string", "pattern": ID_PATTERN},
        "encounterId": {"type": "string", "pattern": ID_PATTERN},
        "draftOrders": BUNDLE_SCHEMA,
    },
}


def find_orders(context: Mapping[str, Any], _read: Callable[[str], Mapping[str, Any] | None]) -> list[OrderTarget]:
    """Every draft order is in scope."""
    return [OrderTarget(r, ref_of(r)) for r in bundle_resources(context["draftOrders"])]


def crd_checks(context: Mapping[str, Any]) -> list[tuple[str, str]]:
    """CRD profile-bundle-request on draftOrders."""
    return crd_bundle_checks(context.get("draftOrders"), "draftOrders", CRD_ORDER_TYPES)


SERVICE = HookService(
    id="crd-order-sign",
    hook="order-sign",
    title="Coverage requirements and medical necessity at order signing",
    description=(
        "Checks each draft order against the payer's CarePath guidelines and returns Da Vinci CRD coverage "
        "information: covered, prior authorization satisfied or needed, and the documentation questionnaire "
        "when the record does not show what the guideline asks."
    ),
    context_schema=CONTEXT_SCHEMA,
    token_fields=("userId", "patientId", "encounterId"),
    primary=True,
    clinical_documentation=True,
    orders_field="draftOrders",
    order_statuses=frozenset({"draft", "active"}),  # draft on a first sign, active on a re-sign (order-sign 1.1)
    find_orders=find_orders,
    crd_checks=crd_checks,
)
