"""Draft orders: validated with fhir.resources, then reduced to what rules read.

Draft orders are few (usually one to three) and decide everything, so they
are validated against the FHIR models (R4B models accept R4 JSON, see
feasibility.md §1). History resources are not validated this way; they are
read defensively as plain JSON by :mod:`fhir_mappings.record`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhir_mappings.codes import Code, arr, concept_codes, concept_text
from fhir_mappings.dates import parse_date
from fhir_mappings.order_shape import surely_valid
from fhir_mappings.systems import BILLING_SYSTEMS

ORDER_TYPES = (
    "ServiceRequest",
    "DeviceRequest",
    "MedicationRequest",
    "NutritionOrder",
    "VisionPrescription",
    "CommunicationRequest",
    "Appointment",
)

_MODULES = {
    "ServiceRequest": "servicerequest",
    "DeviceRequest": "devicerequest",
    "MedicationRequest": "medicationrequest",
    "NutritionOrder": "nutritionorder",
    "VisionPrescription": "visionprescription",
    "CommunicationRequest": "communicationrequest",
    "Appointment": "appointment",
}


class InvalidOrderError(ValueError):
    """A draft order is not a valid FHIR resource of an order type."""


@dataclass(frozen=True, slots=True)
class Timing:
    """The parts of ``occurrenceTiming.repeat`` that size a request."""

    count: int | None = None
    frequency: int | None = None
    period: float | None = None
    period_unit: str | None = None
    bounds_weeks: float | None = None


@dataclass(frozen=True)
class Order:
    """A draft order as the engine sees it."""

    ref: str
    type: str
    codes: frozenset[Code]
    code_text: str
    reason_codes: frozenset[Code] = frozenset()
    reason_refs: tuple[str, ...] = ()
    authored_on: date | None = None
    quantity: float | None = None
    timing: Timing | None = None
    body_site: frozenset[Code] = frozenset()
    location_codes: frozenset[Code] = frozenset()
    encounter_ref: str | None = None
    based_on: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def billing_codes(self) -> frozenset[Code]:
        """The order's CPT and HCPCS codes (what a claim for it would be billed as)."""
        return frozenset(c for c in self.codes if c[0] in BILLING_SYSTEMS)


_MODELS: dict[str, Any] = {}


def validate_order(resource: Mapping[str, Any]) -> None:
    """Validate a draft order against its FHIR R4B model.

    An order of a plain shape the model certainly accepts (``order_shape.surely_valid``) is not
    handed to it: the same verdict, about ten times cheaper. Any other order is.

    :raises InvalidOrderError: naming the resource and the first problems found.
    """
    if surely_valid(resource):
        return
    rtype = resource.get("resourceType") if isinstance(resource, Mapping) else None
    if rtype not in _MODULES:
        raise InvalidOrderError(f"resourceType {rtype!r} is not an order type ({', '.join(ORDER_TYPES)})")
    model = _MODELS.get(rtype)
    if model is None:  # imported on first use (the models are large), then kept: import_module costs per call
        model = _MODELS[rtype] = getattr(importlib.import_module(f"fhir.resources.R4B.{_MODULES[rtype]}"), rtype)
    try:
        model.model_validate(dict(resource))
    except Exception as exc:  # pydantic.ValidationError and fhir-core's own errors
        raise InvalidOrderError(f"{rtype}/{resource.get('id', '?')}: {_describe(exc)}") from exc


def _describe(exc: Exception, limit: int = 6) -> str:
    return describe_invalid(exc, limit)


_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def describe_invalid(exc: Exception, limit: int = 6) -> str:
    """Where and what rule, never the offending value (it may be a name, an SSN, a note or a token).

    Whatever raised it: pydantic's ``errors()`` gives element paths and rule messages; a message
    that quotes the value anyway is replaced by the rule's code, a member name that is not a FHIR
    element name (a misplaced value used as a key) is not repeated, and any other exception is
    named by its class only.
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return type(exc).__name__
    try:
        found = errors(include_url=False)
    except Exception:  # not pydantic's signature: say only what kind of error it was
        return type(exc).__name__
    if not isinstance(found, list) or not found:
        return type(exc).__name__
    return "; ".join(_one_problem(e) for e in found[:limit] if isinstance(e, Mapping))


def _one_problem(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type") or "invalid")
    loc = [str(p) if isinstance(p, int) or _ELEMENT.fullmatch(str(p)) else "(member)" for p in error.get("loc") or ()]
    if kind == "extra_forbidden":  # the member's name is the caller's text: name its parent only
        return f"{'.'.join(loc[:-1]) or '(resource)'}: has a member that is not a FHIR element here"
    message = str(error.get("msg") or kind)
    value = error.get("input")
    quoted = isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(str(value)) >= 3
    if (quoted and str(value) in message) or len(message) > 160:
        message = f"breaks the rule {kind}"
    return f"{'.'.join(loc) or '(resource)'}: {message}"


def _refs(items: Any) -> tuple[str, ...]:
    return tuple(i["reference"] for i in arr(items) if isinstance(i, Mapping) and isinstance(i.get("reference"), str))


def _timing(raw: Any) -> Timing | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("repeat"), Mapping):
        return None
    rep = raw["repeat"]
    bounds = rep.get("boundsDuration")
    weeks = None
    if isinstance(bounds, Mapping) and isinstance(bounds.get("value"), (int, float)):
        weeks = _to_weeks(float(bounds["value"]), str(bounds.get("code") or bounds.get("unit") or ""))
    period = rep.get("boundsPeriod")
    if weeks is None and isinstance(period, Mapping):
        start, end = parse_date(period.get("start")), parse_date(period.get("end"))
        if start and end:
            weeks = (end - start).days / 7.0
    return Timing(
        count=rep.get("count") if isinstance(rep.get("count"), int) else None,
        frequency=rep.get("frequency") if isinstance(rep.get("frequency"), int) else None,
        period=float(rep["period"]) if isinstance(rep.get("period"), (int, float)) else None,
        period_unit=rep.get("periodUnit") if isinstance(rep.get("periodUnit"), str) else None,
        bounds_weeks=weeks,
    )


_WEEKS_PER_UNIT = {
    "d": 1 / 7,
    "day": 1 / 7,
    "days": 1 / 7,
    "wk": 1.0,
    "week": 1.0,
    "weeks": 1.0,
    "mo": 30.4375 / 7,
    "month": 30.4375 / 7,
    "months": 30.4375 / 7,
}


def _to_weeks(value: float, unit: str) -> float | None:
    factor = _WEEKS_PER_UNIT.get(unit.lower())
    return value * factor if factor is not None else None


def read_order(resource: Mapping[str, Any], index: int = 0) -> Order:
    """Reduce a (validated) draft order to an :class:`Order`."""
    rtype = str(resource.get("resourceType"))
    code_field = {
        "MedicationRequest": "medicationCodeableConcept",
        "DeviceRequest": "codeCodeableConcept",
        "Appointment": "serviceType",
    }.get(rtype, "code")
    quantity = resource.get("quantityQuantity")
    qty = (
        float(quantity["value"])
        if isinstance(quantity, Mapping) and isinstance(quantity.get("value"), (int, float))
        else None
    )
    encounter = resource.get("encounter")
    return Order(
        ref=f"{rtype}/{resource.get('id') or index}",
        type=rtype,
        codes=frozenset(concept_codes(resource.get(code_field))),
        code_text=concept_text(resource.get(code_field)),
        reason_codes=frozenset(concept_codes(resource.get("reasonCode"))),
        reason_refs=_refs(resource.get("reasonReference")),
        authored_on=parse_date(resource.get("authoredOn") or resource.get("created")),
        quantity=qty,
        timing=_timing(resource.get("occurrenceTiming")),
        body_site=frozenset(concept_codes(resource.get("bodySite"))),
        location_codes=frozenset(concept_codes(resource.get("locationCode"))),
        encounter_ref=encounter.get("reference") if isinstance(encounter, Mapping) else None,
        based_on=_refs(resource.get("basedOn")),
        raw=resource,
    )
