"""A draft order or Coverage certainly valid FHIR, recognised without the FHIR models (a shortcut, not a verdict).

Validating a ServiceRequest with ``fhir.resources`` costs 0.1–0.4 ms a call, more than reading it.
Most draft orders are plain: a code, reasons, a subject, a date, a body site, a place, perhaps a
quantity and a schedule. :func:`surely_valid` recognises those, element by element, with rules
as strict as the models' or stricter (ASCII codes and URIs, full dates, no extensions, no
``contained``, no empty or unknown member). It answers True only for such an order; anything else,
valid or not, answers False, and ``orders.validate_order`` asks the models as before, so every
order the models refuse is still refused with their words. ``tests/test_order_shape.py`` mutates
the scenario library's orders at every element and holds: True here means the models accept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

Check = Callable[[Any], bool]

_CODE = re.compile(r"[!-~]+(?: [!-~]+)*")  # FHIR code: no leading, trailing or double spaces (ASCII only here)
_URI = re.compile(r"[!-~]+")  # FHIR uri: no whitespace (ASCII only here)
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# FHIR string: no whitespace but space, CR, LF and tab; here also no lone surrogate, and some character not a space
_OTHER_SPACES = "".join(chr(c) for c in range(0x3001) if chr(c).isspace() and chr(c) not in " \r\n\t")
_STRING = re.compile(f"[^{re.escape(_OTHER_SPACES)}\ud800-\udfff]*")
_DATE = re.compile(r"(19|20|21)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")
_INT32 = 2_147_483_647


def _string(value: Any) -> bool:
    return type(value) is str and value.strip() != "" and _STRING.fullmatch(value) is not None


def _code(value: Any) -> bool:
    return type(value) is str and _CODE.fullmatch(value) is not None


def _uri(value: Any) -> bool:
    return type(value) is str and _URI.fullmatch(value) is not None


def _id(value: Any) -> bool:
    return type(value) is str and _ID.fullmatch(value) is not None


def _date(value: Any) -> bool:
    """A full calendar date, ``YYYY-MM-DD`` (years 1900–2199): a valid FHIR date and dateTime."""
    if type(value) is not str or _DATE.fullmatch(value) is None:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _decimal(value: Any) -> bool:
    """An integer of at most 18 digits or a finite float (Python's spelling of either is a FHIR decimal)."""
    return (type(value) is int and abs(value) < 10**18) or (type(value) is float and math.isfinite(value))


def _positive_int(value: Any) -> bool:
    return type(value) is int and 1 <= value <= _INT32


def _unsigned_int(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _INT32


def _boolean(value: Any) -> bool:
    return type(value) is bool


def _element(members: dict[str, Check], required: tuple[str, ...] = ()) -> Check:
    """An element (a JSON object): not empty, only these members, each one valid, the required ones there."""

    def check(value: Any) -> bool:
        if type(value) is not dict or not value:
            return False
        for key, item in value.items():
            member = members.get(key)
            if member is None or not member(item):
                return False
        return all(key in value for key in required)

    return check


def _list(item: Check) -> Check:
    """A repeating element: a non-empty JSON array of valid items."""

    def check(value: Any) -> bool:
        return type(value) is list and bool(value) and all(item(v) for v in value)

    return check


CODING = _element({"system": _uri, "version": _string, "code": _code, "display": _string, "userSelected": _boolean})
CODEABLE_CONCEPT = _element({"coding": _list(CODING), "text": _string})
REFERENCE = _element({"reference": _string, "type": _uri, "display": _string})
QUANTITY = _element({"value": _decimal, "unit": _string, "system": _uri, "code": _code})
TIMING = _element(
    {
        "repeat": _element(
            {
                "boundsDuration": QUANTITY,
                "count": _positive_int,
                "countMax": _positive_int,
                "duration": _decimal,
                "durationUnit": _code,
                "frequency": _positive_int,
                "frequencyMax": _positive_int,
                "period": _decimal,
                "periodUnit": _code,
                "offset": _unsigned_int,
            }
        ),
        "code": CODEABLE_CONCEPT,
    }
)
ANNOTATION = _element({"text": _string, "time": _date}, required=("text",))

SERVICE_REQUEST = _element(
    {
        "resourceType": lambda v: v == "ServiceRequest",
        "id": _id,
        "status": _code,
        "intent": _code,
        "priority": _code,
        "doNotPerform": _boolean,
        "category": _list(CODEABLE_CONCEPT),
        "code": CODEABLE_CONCEPT,
        "orderDetail": _list(CODEABLE_CONCEPT),
        "quantityQuantity": QUANTITY,
        "subject": REFERENCE,
        "encounter": REFERENCE,
        "occurrenceTiming": TIMING,
        "authoredOn": _date,
        "requester": REFERENCE,
        "performer": _list(REFERENCE),
        "locationCode": _list(CODEABLE_CONCEPT),
        "reasonCode": _list(CODEABLE_CONCEPT),
        "reasonReference": _list(REFERENCE),
        "insurance": _list(REFERENCE),
        "supportingInfo": _list(REFERENCE),
        "bodySite": _list(CODEABLE_CONCEPT),
        "note": _list(ANNOTATION),
        "patientInstruction": _string,
    },
    required=("resourceType", "status", "intent", "subject"),
)
IDENTIFIER = _element({"use": _code, "type": CODEABLE_CONCEPT, "system": _uri, "value": _string})
PERIOD = _element({"start": _date, "end": _date})
# The Coverage every answer references (``coverage.select_coverage``): a plain one is recognised too.
COVERAGE = _element(
    {
        "resourceType": lambda v: v == "Coverage",
        "id": _id,
        "identifier": _list(IDENTIFIER),
        "status": _code,
        "type": CODEABLE_CONCEPT,
        "policyHolder": REFERENCE,
        "subscriber": REFERENCE,
        "subscriberId": _string,
        "beneficiary": REFERENCE,
        "dependent": _string,
        "relationship": CODEABLE_CONCEPT,
        "period": PERIOD,
        "payor": _list(REFERENCE),
        "class": _list(_element({"type": CODEABLE_CONCEPT, "value": _string, "name": _string}, ("type", "value"))),
        "order": _positive_int,
        "network": _string,
        "subrogation": _boolean,
    },
    required=("resourceType", "status", "beneficiary", "payor"),
)
SHAPES: dict[str, Check] = {"ServiceRequest": SERVICE_REQUEST, "Coverage": COVERAGE}


def surely_valid(resource: Mapping[str, Any]) -> bool:
    """True only for a draft order or Coverage of a shape the models certainly accept; False says nothing."""
    rtype = resource.get("resourceType") if type(resource) is dict else None
    shape = SHAPES.get(rtype) if type(rtype) is str else None
    return shape is not None and shape(resource)
