"""What every hook service declares; the registry in ``hooks/__init__.py`` derives discovery and routing from it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ID_PATTERN = "^[A-Za-z0-9\\-.]{1,64}$"
REF_PATTERN = "^[A-Z][A-Za-z]+/[A-Za-z0-9\\-.]{1,64}$"
USER_PATTERN = "^(Practitioner|PractitionerRole)/[A-Za-z0-9\\-.]{1,64}$"

# CRD profile-bundle-request: the request types a draftOrders Bundle may hold.
CRD_ORDER_TYPES = (
    "CommunicationRequest",
    "DeviceRequest",
    "MedicationRequest",
    "NutritionOrder",
    "ServiceRequest",
    "VisionPrescription",
)

BUNDLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {
        "resourceType": {"const": "Bundle"},
        "entry": {"type": "array", "items": {"type": "object"}},
    },
}


@dataclass(frozen=True)
class OrderTarget:
    """One order to decide, and the resource its coverage information goes on.

    Usually the same resource; for an Appointment ``basedOn`` a ServiceRequest
    the ServiceRequest is both decided and updated (CRD cards.md, FHIR-50318).
    An order *contained* in another resource cannot be updated on its own: then
    ``carrier`` is that resource, and it gets the coverage information.

    ``location`` is where the request holds the order, or the reference it was read
    through, as a path under ``$.context`` (``appointments.entry[0].resource.basedOn[1]``);
    None lets the caller work it out from ``orders_field``.
    """

    order: Mapping[str, Any]
    context_ref: str
    location: str | None = None
    carrier: Mapping[str, Any] | None = None

    @property
    def annotated(self) -> Mapping[str, Any]:
        """The resource whose update carries this order's coverage information."""
        return self.carrier if self.carrier is not None else self.order


class InvalidContext(ValueError):
    """A context element is not valid FHIR in a way the JSON schema cannot say (400).

    ``args``: the message, then the element's path under ``$.context``.
    """


@dataclass(frozen=True)
class HookService:
    """One CDS service: a hook, its context rules, its prefetch tokens and how orders are found."""

    id: str
    hook: str
    title: str
    description: str
    context_schema: Mapping[str, Any]
    token_fields: tuple[str, ...]
    primary: bool
    clinical_documentation: bool
    orders_field: str
    # (context, read) -> targets; ``read`` takes ``Type/id`` or an absolute URL and returns the resource or None
    # (cds_server.pipeline.invoke._reader); MissingOrder(ref, path) -> 412, InvalidContext(message, path) -> 400.
    find_orders: Callable[[Mapping[str, Any], Callable[[str], Mapping[str, Any] | None]], list[OrderTarget]]
    crd_checks: Callable[[Mapping[str, Any]], list[tuple[str, str]]]
    normalise_context: Callable[[Mapping[str, Any]], Mapping[str, Any]] = lambda context: context
    # Order statuses this hook is for (empty: not checked). An order in another status is not the
    # hook's business: deciding it would issue an authorization for an order nobody is signing.
    order_statuses: frozenset[str] = frozenset()


def bundle_resources(bundle: Any) -> list[Mapping[str, Any]]:
    """Return the resources of a Bundle's entries (malformed entries skipped)."""
    if not isinstance(bundle, Mapping) or not isinstance(bundle.get("entry"), list):
        return []
    return [e["resource"] for e in bundle["entry"] if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)]


def ref_of(resource: Mapping[str, Any]) -> str:
    """Return ``Type/id`` of a resource."""
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def crd_bundle_checks(bundle: Any, field: str, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    """Check a context Bundle against the CRD bundle profiles; return (message, location) problems."""
    problems: list[tuple[str, str]] = []
    if not isinstance(bundle, Mapping):
        return problems
    where = f"context.{field}"
    # Bundle.type 'collection' and entry.fullUrl are in the CRD profile, but real clients (the Inferno
    # CRD kit's own requests among them) omit them and nothing here depends on them: not rejected.
    entries = bundle.get("entry") if isinstance(bundle.get("entry"), list) else []
    if not entries:
        problems.append((f"{field} must hold at least one entry", f"{where}.entry"))
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, Mapping) and isinstance(resource.get("id"), str):
            if ref_of(resource) in seen:
                problems.append(
                    (
                        f"{ref_of(resource)} appears twice; ids must be unique (CRD found-36)",
                        f"{where}.entry[{i}].resource.id",
                    )
                )
            seen.add(ref_of(resource))
        if not isinstance(resource, Mapping):
            problems.append(("every entry needs a resource", f"{where}.entry[{i}].resource"))
            continue
        if resource.get("resourceType") not in allowed:
            problems.append(
                (
                    f"{resource.get('resourceType')!r} is not allowed here (allowed: {', '.join(allowed)})",
                    f"{where}.entry[{i}].resource.resourceType",
                )
            )
        if not isinstance(resource.get("id"), str) or not resource.get("id"):
            problems.append(("every resource needs an id (CRD found-36)", f"{where}.entry[{i}].resource.id"))
    return problems
