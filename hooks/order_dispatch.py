"""order-dispatch: a performer is chosen for existing orders (a CRD primary hook)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hooks.base import CRD_ORDER_TYPES, ID_PATTERN, REF_PATTERN, HookService, OrderTarget

CONTEXT_SCHEMA = {
    "type": "object",
    "required": ["patientId", "dispatchedOrders", "performer"],
    "properties": {
        "patientId": {"type": "string", "pattern": ID_PATTERN},
        "dispatchedOrders": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": REF_PATTERN}},
        "performer": {"type": "string", "pattern": REF_PATTERN},
        "fulfillmentTasks": {"type": "array", "items": {"type": "object"}},
    },
}


class MissingOrder(LookupError):
    """A dispatched order could not be read from the EHR."""


def find_orders(context: Mapping[str, Any], read: Callable[[str], Mapping[str, Any] | None]) -> list[OrderTarget]:
    """The dispatched orders live on the EHR's FHIR server: read each one."""
    targets = []
    for ref in dict.fromkeys(context["dispatchedOrders"]):  # a reference listed twice is one order
        resource = read(ref)
        if resource is None:
            raise MissingOrder(ref)
        targets.append(OrderTarget(resource, ref))
    return targets


def legacy_context(context: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept the draft order-dispatch context that names one ``order`` and one ``task``.

    Early drafts of the hook (and the Inferno CRD kit's own ``order_dispatch_hook_request.json``)
    send ``order: "ServiceRequest/1"`` and ``task: {...}`` instead of ``dispatchedOrders`` and
    ``fulfillmentTasks``. Refusing them would fail testers for a renaming; the 2.0 fields win
    when both are present.
    """
    if "dispatchedOrders" in context or not isinstance(context.get("order"), str):
        return context
    current = {k: v for k, v in context.items() if k not in ("order", "task")}
    current["dispatchedOrders"] = [context["order"]]
    if isinstance(context.get("task"), Mapping) and "fulfillmentTasks" not in context:
        current["fulfillmentTasks"] = [context["task"]]
    return current


def crd_checks(context: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Dispatched orders must be CRD request types."""
    problems = []
    for i, ref in enumerate(context.get("dispatchedOrders") or []):
        if isinstance(ref, str) and ref.split("/")[0] not in CRD_ORDER_TYPES:
            problems.append((f"{ref!r} is not a CRD request type", f"context.dispatchedOrders[{i}]"))
    return problems


SERVICE = HookService(
    id="crd-order-dispatch",
    hook="order-dispatch",
    title="Coverage requirements when an order is dispatched to a performer",
    description=(
        "Checks each dispatched order against the payer's CarePath guidelines once a performer is chosen, and "
        "returns Da Vinci CRD coverage information on the order."
    ),
    context_schema=CONTEXT_SCHEMA,
    token_fields=("patientId", "performer"),
    primary=True,
    clinical_documentation=True,
    orders_field="dispatchedOrders",
    # A signed order whose performer is being chosen; draft too, as the Inferno CRD kit dispatches its draft example.
    order_statuses=frozenset({"active", "draft"}),
    find_orders=find_orders,
    crd_checks=crd_checks,
    normalise_context=legacy_context,
)
