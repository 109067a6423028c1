"""appointment-book: appointments are booked (a CRD primary hook)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fhir_mappings.codes import arr, obj
from hooks.base import (
    BUNDLE_SCHEMA,
    ID_PATTERN,
    HookService,
    OrderTarget,
    bundle_resources,
    crd_bundle_checks,
    ref_of,
)
from hooks.order_dispatch import MissingOrder

CONTEXT_SCHEMA = {
    "type": "object",
    "required": ["userId", "patientId", "appointments"],
    "properties": {
        "userId": {
            "type": "string",
            "pattern": "^(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\\-.]{1,64}$",
        },
        "patientId": {"type": "string", "pattern": ID_PATTERN},
        "encounterId": {"type": "string", "pattern": ID_PATTERN},
        "appointments": BUNDLE_SCHEMA,
    },
}


def find_orders(context: Mapping[str, Any], read: Callable[[str], Mapping[str, Any] | None]) -> list[OrderTarget]:
    """An Appointment based on a ServiceRequest is decided (and annotated) through that ServiceRequest.

    ``basedOn`` may be relative (``ServiceRequest/1``) or absolute (``https://.../ServiceRequest/1``);
    several appointments based on one ServiceRequest decide it once.
    """
    targets: dict[str, OrderTarget] = {}
    for appointment in bundle_resources(context["appointments"]):
        based_on = [ref for ref in (_service_request_ref(b) for b in arr(appointment.get("basedOn"))) if ref]
        if not based_on:
            targets.setdefault(ref_of(appointment), OrderTarget(appointment, ref_of(appointment)))
        for ref in based_on:
            if ref in targets:
                continue
            order = read(ref)
            if order is None:
                raise MissingOrder(ref)
            targets[ref] = OrderTarget(order, ref)
    return list(targets.values())


def _service_request_ref(based_on: Any) -> str | None:
    ref = obj(based_on).get("reference")
    if not isinstance(ref, str):
        return None
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "ServiceRequest":
        return f"ServiceRequest/{parts[-1]}"
    return None


def crd_checks(context: Mapping[str, Any]) -> list[tuple[str, str]]:
    """CRD profile-bundle-appointment: a collection of Appointments."""
    return crd_bundle_checks(context.get("appointments"), "appointments", ("Appointment",))


SERVICE = HookService(
    id="crd-appointment-book",
    hook="appointment-book",
    title="Coverage requirements when an appointment is booked",
    description=(
        "Checks the service behind each appointment against the payer's CarePath guidelines and returns Da Vinci "
        "CRD coverage information (on the ServiceRequest the appointment is based on, when there is one)."
    ),
    context_schema=CONTEXT_SCHEMA,
    token_fields=("userId", "patientId", "encounterId"),
    primary=True,
    clinical_documentation=True,
    orders_field="appointments",
    find_orders=find_orders,
    crd_checks=crd_checks,
)
