"""appointment-book: appointments are booked (a CRD primary hook)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fhir_mappings.codes import arr, obj
from fhir_mappings.record import literal_target
from hooks.base import (
    BUNDLE_SCHEMA,
    ID_PATTERN,
    HookService,
    InvalidContext,
    OrderTarget,
    crd_bundle_checks,
    ref_of,
)
from hooks.order_dispatch import MissingOrder

# Appointment.basedOn is a list of References (to ServiceRequests, FHIR R4): a basedOn that is
# not an array of objects, or a reference that is not a string, is refused here (400, with its path).
_APPOINTMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "contained": {"type": "array", "items": {"type": "object"}},
        "basedOn": {
            "type": "array",
            "items": {"type": "object", "properties": {"reference": {"type": "string"}}},
        },
    },
}
APPOINTMENTS_SCHEMA: dict[str, Any] = {
    **BUNDLE_SCHEMA,
    "properties": {
        **BUNDLE_SCHEMA["properties"],
        "entry": {"type": "array", "items": {"type": "object", "properties": {"resource": _APPOINTMENT_SCHEMA}}},
    },
}

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
        "appointments": APPOINTMENTS_SCHEMA,
    },
}

_HISTORY = re.compile(r"/_history/[^/]*/?$")


def find_orders(context: Mapping[str, Any], read: Callable[[str], Mapping[str, Any] | None]) -> list[OrderTarget]:
    """An Appointment based on a ServiceRequest is decided (and annotated) through that ServiceRequest.

    Each ``basedOn`` must lead to its ServiceRequest; the bare Appointment is decided only when
    it has no ``basedOn`` at all (deciding it instead would answer for the wrong service, and CRD
    wants the ServiceRequest updated):

    * ``ServiceRequest/1`` and ``ServiceRequest/1/_history/3`` (the version dropped: the
      current ServiceRequest is decided and updated) are read through ``read``;
    * an absolute ``https://host/fhir/ServiceRequest/1`` is passed to ``read`` as it is:
      ``read`` answers it only when the URL is on the call's ``fhirServer`` or the
      ServiceRequest is in the prefetch;
    * ``#sr1`` names a ServiceRequest in the Appointment's ``contained``. It is decided, but
      a contained resource cannot be updated on its own, so the coverage information goes on
      the Appointment that carries it (``OrderTarget.carrier``): that update is the update
      of the ServiceRequest the CRD rule asks for;
    * a ServiceRequest that cannot be obtained (not readable, or named by ``urn:``, by a search
      such as ``ServiceRequest?identifier=...``, or by identifier only) raises
      :class:`MissingOrder` (412);
    * a reference to anything but a ServiceRequest, or to a contained resource that is not
      there, is not valid FHIR: :class:`InvalidContext` (400). So is a ``basedOn`` that is not
      a list of objects, or a ``reference`` that is not a string: the context schema refuses them.

    Several appointments based on one ServiceRequest decide it once.
    """
    targets: dict[str, OrderTarget] = {}
    for i, entry in enumerate(arr(obj(context["appointments"]).get("entry"))):
        appointment = obj(entry).get("resource")
        if not isinstance(appointment, Mapping):
            continue
        where = f"appointments.entry[{i}].resource"
        based_on = arr(appointment.get("basedOn"))
        if not based_on:
            targets.setdefault(ref_of(appointment), OrderTarget(appointment, ref_of(appointment), where))
        for k, item in enumerate(based_on):
            key, target = _based_on(appointment, obj(item), where, f"{where}.basedOn[{k}]", read, targets)
            targets.setdefault(key, target)
    return list(targets.values())


def _based_on(
    appointment: Mapping[str, Any],
    item: Mapping[str, Any],
    where: str,
    at: str,
    read: Callable[[str], Mapping[str, Any] | None],
    known: Mapping[str, OrderTarget],
) -> tuple[str, OrderTarget]:
    """Return the key and target of one ``basedOn`` reference (see :func:`find_orders`); ``known`` is not re-read."""
    ref = item.get("reference")
    if not isinstance(ref, str):
        raise MissingOrder("the ServiceRequest named without a literal reference", at)
    if ref.startswith("#"):
        for c, contained in enumerate(arr(appointment.get("contained"))):
            if isinstance(contained, Mapping) and contained.get("id") == ref[1:]:
                if contained.get("resourceType") != "ServiceRequest":
                    raise InvalidContext("Appointment.basedOn references only ServiceRequests", f"{at}.reference")
                return f"{ref_of(appointment)}{ref}", OrderTarget(
                    contained, ref_of(appointment), f"{where}.contained[{c}]", carrier=appointment
                )
        raise InvalidContext(f"{ref} is not in the Appointment's contained resources", f"{at}.reference")
    if ref.startswith("urn:"):
        raise MissingOrder(ref, at)
    path = ref.split("?", 1)[0].rstrip("/")
    if "?" in ref:
        if path.split("/")[-1] != "ServiceRequest":
            raise InvalidContext("Appointment.basedOn references only ServiceRequests", f"{at}.reference")
        raise MissingOrder(ref, at)  # a search names no single ServiceRequest to read
    target = literal_target(ref)
    if target is None or target[0] != "ServiceRequest":
        raise InvalidContext("Appointment.basedOn references only ServiceRequests", f"{at}.reference")
    key = f"ServiceRequest/{target[1]}"
    if key in known:
        return key, known[key]
    unversioned = _HISTORY.sub("", ref)
    order = read(unversioned if "://" in unversioned else key)
    if order is None:
        raise MissingOrder(ref, at)
    return key, OrderTarget(order, key, at)


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
