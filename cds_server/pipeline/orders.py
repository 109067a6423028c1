"""Stage 2, the orders: which orders the call asks about, each for the call's patient and valid FHIR.

Orders the context only references are read from the prefetch first, then from the EHR; an order
for another patient, an invalid one a CarePath must decide, or too many orders refuse the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cds_server.engine import CarePath, governs
from cds_server.errors import CrdViolation, DataUnavailable, InvalidRequest, Issue, Problems, TooManyOrders
from cds_server.pipeline.call import Call
from cds_server.pipeline.fhir_client import FhirError
from cds_server.records.json_text import surely_without_empties
from fhir_mappings.codes import arr, obj
from fhir_mappings.orders import ORDER_TYPES, InvalidOrderError, Order, read_order, validate_order
from fhir_mappings.record import foreign_patient_elements
from hooks import OrderTarget
from hooks.base import InvalidContext
from hooks.order_dispatch import MissingOrder

log = logging.getLogger(__name__)


def find_orders(call: Call, carepaths: Sequence[CarePath], limit: int = 50) -> list[tuple[OrderTarget, Order]]:
    """Return the orders in scope, each for the call's patient and validated against its FHIR model.

    :raises TooManyOrders: the context carries more than ``limit`` orders (413), checked before any work.
    :raises CrdViolation: an order, or an Appointment, names someone other than ``patientId`` (422).
    :raises DataUnavailable: an order the context only references cannot be read (412).
    :raises InvalidRequest: an order is not a valid FHIR resource (400).
    """
    _limit_orders(call, limit)
    held = _context_resources(call)
    _refuse_other_patients(call, [(resource, path, True) for path, resource in held])
    targets, fetched = _targets(call)
    in_context = {id(resource) for _, resource in held}
    by_reference = {id(resource) for resource in fetched}
    _refuse_other_patients(
        call,
        [(t.order, _where(call, t), id(t.order) not in by_reference) for t in targets if id(t.order) not in in_context],
    )
    problems = Problems()
    found = [pair for index, t in enumerate(targets) if (pair := _checked(call, carepaths, index, t, problems))]
    problems.raise_if_any(InvalidRequest, "An order is not a valid FHIR resource")
    return found


def _targets(call: Call) -> tuple[list[OrderTarget], list[Mapping[str, Any]]]:
    """The hook's orders in scope, and those of them read by reference (from the prefetch or the EHR)."""
    reader = _reader(call)
    fetched: list[Mapping[str, Any]] = []  # what ``read`` returned: orders the context only references

    def read(ref: str) -> Mapping[str, Any] | None:
        found = reader(ref)
        if found is not None:
            fetched.append(found)
        return found

    try:
        return call.service.find_orders(call.context, read), fetched
    except MissingOrder as exc:
        where = f"$.context.{exc.args[1]}" if len(exc.args) > 1 else f"$.context.{call.service.orders_field}"
        raise DataUnavailable(
            f"Could not read {exc.args[0]} from the prefetch or the FHIR server",
            [Issue(f"{exc.args[0]} is not available", where)],
        ) from exc
    except InvalidContext as exc:
        raise InvalidRequest(
            f"The {call.service.hook} context is not valid", [Issue(exc.args[0], f"$.context.{exc.args[1]}")]
        ) from exc


def _checked(
    call: Call, carepaths: Sequence[CarePath], index: int, target: OrderTarget, problems: Problems
) -> tuple[OrderTarget, Order] | None:
    """The order read and validated, or None with the reason added to ``problems``."""
    field_ = call.service.orders_field
    bundle = isinstance(call.context.get(field_), Mapping)
    where = f"$.context.{field_}.entry[{index}].resource" if bundle else _where(call, target)
    empty = None if surely_without_empties(target.order) else _first_empty(target.order, where)
    if empty:
        problems.add("FHIR JSON allows no null or empty values", empty)
        return None
    status = target.order.get("status")
    if call.service.order_statuses and (not isinstance(status, str) or status not in call.service.order_statuses):
        allowed = " or ".join(sorted(call.service.order_statuses))
        problems.add(f"{call.service.hook} decides only orders whose status is {allowed}", f"{where}.status")
        return None
    order = read_order(target.order, index)
    try:
        validate_order(target.order)
    except InvalidOrderError as exc:
        # An order a CarePath must decide has to be valid FHIR; one outside every CarePath is passed
        # through (its answer is "no-auth" whatever its flaws, e.g. the Inferno sample NutritionOrder).
        if governed(carepaths, [order]) or order.type not in ORDER_TYPES:
            problems.add(str(exc), f"$.context.{field_}")
            return None
        log.info("passing through an invalid order no CarePath governs: %s", order.ref)
    return target, order


def _limit_orders(call: Call, limit: int) -> None:
    """Refuse a call with more orders than MAX_ORDERS_PER_CALL before validating or deciding any.

    10,000 draft orders fit in the body size limit but took 30 s: the worker was killed mid-call.
    """
    field_ = call.service.orders_field
    value = call.context.get(field_)
    count = len(arr(value.get("entry"))) if isinstance(value, Mapping) else len(arr(value))
    if count > limit:
        raise TooManyOrders(
            f"The call carries {count} orders; this service takes at most {limit} per call (MAX_ORDERS_PER_CALL)",
            [
                Issue(
                    f"more than MAX_ORDERS_PER_CALL ({limit}) orders; send them in smaller calls", f"$.context.{field_}"
                )
            ],
        )


def _reader(call: Call) -> Callable[[str], Mapping[str, Any] | None]:
    """Return how a hook reads an order its context only references (``HookService.find_orders``'s ``read``).

    ``read(ref)`` takes ``Type/id`` or an absolute URL and returns the resource, or None when it
    cannot be had. The prefetch is looked at first (e.g. a client that prefetches the dispatched
    orders under any key), then the call's ``fhirServer``. An absolute URL is read from the server
    only when it is on that server (the access token never goes elsewhere), and otherwise found
    only when its ``Type/id`` is in the prefetch this EHR sent with the call.
    """
    client = call.client
    found_by_ref: list[dict[str, Mapping[str, Any]]] = []  # indexed on the first read only: most calls read none
    server = call.body.get("fhirServer")
    base = server.rstrip("/") + "/" if isinstance(server, str) and server else None

    def read(ref: str) -> Mapping[str, Any] | None:
        on_server = True
        if "://" in ref:
            tail = "/".join(ref.rstrip("/").split("/")[-2:])
            on_server = base is not None and ref.startswith(base) and ref[len(base) :].rstrip("/") == tail
            ref = tail
        if not found_by_ref:
            found_by_ref.append(_prefetched_by_ref(call.body.get("prefetch")))
        if ref in found_by_ref[0]:
            return found_by_ref[0][ref]
        if client is None or not on_server:
            return None
        try:
            found = client.read(ref)
        except FhirError:
            return None
        return found if found is not None and f"{found.get('resourceType')}/{found.get('id')}" == ref else None

    return read


def _context_resources(call: Call) -> list[tuple[str, Mapping[str, Any]]]:
    """The resources the context holds itself (``draftOrders``, ``appointments``), each with its JSON path."""
    field_ = call.service.orders_field
    bundle = call.context.get(field_)
    if not isinstance(bundle, Mapping):
        return []  # e.g. dispatchedOrders: references only
    return [
        (f"$.context.{field_}.entry[{i}].resource", entry["resource"])
        for i, entry in enumerate(arr(bundle.get("entry")))
        if isinstance(entry, Mapping) and isinstance(entry.get("resource"), Mapping)
    ]


def _where(call: Call, target: OrderTarget) -> str:
    """The JSON path of where the request holds a target's order, or of the reference it was read through."""
    field_ = call.service.orders_field
    if target.location:
        return f"$.context.{target.location}"
    refs = call.context.get(field_)
    if isinstance(refs, list) and target.context_ref in refs:
        return f"$.context.{field_}[{refs.index(target.context_ref)}]"
    return f"$.context.{field_}"


def _refuse_other_patients(call: Call, orders: Sequence[tuple[Mapping[str, Any], str, bool]]) -> None:
    """Refuse orders that are not for ``context.patientId`` (422): deciding one would use this patient's record.

    Each order comes with its path and whether the request holds it there (then the path is
    extended to the offending element) or only references it (then the path is the reference).
    The other patient's reference is not repeated in the answer.

    :raises CrdViolation: naming each offending element.
    """
    patient_id = call.context.get("patientId")
    if not isinstance(patient_id, str):
        return
    problems = Problems()
    for resource, path, held in orders:
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        for element in foreign_patient_elements(resource, patient_id):
            if held:
                problems.add(f"{ref}.{element} names someone other than context.patientId", f"{path}.{element}")
            else:
                problems.add(f"{ref}, read by this reference, has a {element} other than context.patientId", path)
    problems.raise_if_any(CrdViolation, "An order is not for the patient in context.patientId")


def _first_empty(value: Any, path: str) -> str | None:
    """Return the path of the first null / "" / [] / {} in a resource (FHIR JSON forbids them), or None."""
    if value is None or value == "" or value == [] or value == {}:
        return path
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _first_empty(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_empty(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _prefetched_by_ref(prefetch: Any) -> dict[str, Mapping[str, Any]]:
    """Every resource in the prefetch, by ``Type/id``."""
    found: dict[str, Mapping[str, Any]] = {}
    for value in obj(prefetch).values():
        resources = [e.get("resource") for e in arr(obj(value).get("entry")) if isinstance(e, Mapping)]
        for resource in [value, *resources]:
            if isinstance(resource, Mapping) and isinstance(resource.get("id"), str):
                found.setdefault(f"{resource.get('resourceType')}/{resource['id']}", resource)
    return found


def governed(carepaths: Sequence[CarePath], orders: Sequence[Order]) -> bool:
    """Return True when some order is for a CarePath service (then history is needed)."""
    return any(governs(carepaths, o) for o in orders)
