"""The CDS Hooks HTTP surface: discovery, invocation, feedback. Two views plus feedback, all registry-driven.

Every error leaves as JSON: an OperationOutcome with the right 4xx status,
never a 500 page (an unexpected failure answers 500 with an OperationOutcome
and is logged with its request id).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g
from werkzeug.exceptions import HTTPException

from cds_server.errors import (
    Issue,
    PayloadTooLarge,
    ServiceError,
    TemporarilyUnavailable,
    UnknownService,
    operation_outcome,
)
from cds_server.metrics import CALLS, LATENCY, OUTCOMES
from cds_server.pipeline.call import Runtime
from cds_server.pipeline.discovery import discovery_document
from cds_server.pipeline.invoke import handle
from cds_server.records.audit import audit_copy
from cds_server.records.store import now
from cds_server.web.wire import base_url, json_response, read_json
from hooks import SERVICES

log = logging.getLogger(__name__)
bp = Blueprint("cds", __name__)


def runtime() -> Runtime:
    """Return the app's runtime (CarePaths, store, HTTP session, thread pool)."""
    found: Runtime = current_app.extensions["cds"]
    return found


@bp.get("/cds-services")
def discovery() -> Response:
    """CDS Hooks discovery: every service of the registry."""
    return json_response(discovery_document(runtime()))


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    """Call one service; every outcome (including errors) is kept as an invocation record.

    An answered call keeps its invocation in the pipeline's one transaction with its decisions,
    numbers and cards (``pipeline.keep``); an error answer keeps the invocation alone.
    """
    started = time.perf_counter()
    body: Any = None
    kept = False

    def invocation(status: int, payload: Mapping[str, Any]) -> dict[str, Any]:
        nonlocal kept
        kept = True  # handed to the unit of work: written with the call's records, or not at all
        return _invocation_row(service_id, body, status, payload, started)

    try:
        service = SERVICES.get(service_id)
        if service is None:
            raise UnknownService(f"No service {service_id!r}", [Issue(f"unknown service id {service_id!r}")])
        body = read_json()
        result = handle(runtime(), service, body, invocation, base_url(), g.get("client"))
        status, payload = 200, result.response
        for order in result.results:
            if order.decision is not None:
                OUTCOMES.labels(order.decision.service_id or "none", order.decision.outcome.value).inc()
    except ServiceError as exc:
        status, payload, kept = exc.status, exc.outcome(), False
    except sa.exc.DBAPIError:  # the database is down (e.g. jti kept in Redis, so the guard did not notice)
        log.exception("database unavailable %s", g.get("request_id"))
        status, payload, kept = 503, UNAVAILABLE.outcome(), False
    except Exception:  # a defect: answer an OperationOutcome and keep the record (CRD found-37)
        log.exception("unexpected error %s", g.get("request_id"))
        status, payload, kept = 500, operation_outcome([Issue("internal error")], "exception"), False
    if not kept:
        _record(service_id, body, status, payload, started)
    return _answered(service_id, status, payload, started)


def _answered(service_id: str, status: int, payload: Any, started: float) -> Response:
    """Count the call and write the answer (503 says when to try again)."""
    CALLS.labels(service_id if service_id in SERVICES else "unknown", str(status)).inc()
    if service_id in SERVICES:
        LATENCY.labels(SERVICES[service_id].hook).observe(time.perf_counter() - started)
    response = json_response(payload, status)
    if status == 503:
        response.headers["Retry-After"] = str(TemporarilyUnavailable.retry_after)
    return response


UNAVAILABLE = TemporarilyUnavailable("The service's storage is temporarily unavailable; try again shortly")


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    """CDS Hooks feedback: valid feedback is accepted (2xx) and kept once per item.

    Each item is tied to the card it names when this service issued that card; an item
    naming an unknown card is still kept (never lose what a client reported) but flagged,
    and listed back in ``unknownCards`` so the client can see the mismatch.
    """
    if service_id not in SERVICES:
        raise UnknownService(f"No service {service_id!r}")
    body = read_json()
    items = _feedback_items(body)
    store = runtime().store
    known = store.known_cards(service_id, [str(i["card"]) for i in items])
    stored = store.record_feedback(service_id, items, known)
    answer: dict[str, Any] = {"received": len(items), "new": stored}
    unknown = sorted({str(i["card"]) for i in items} - known)
    if unknown:
        log.warning("feedback names %d card(s) this service did not issue", len(unknown))
        answer["unknownCards"] = unknown
    return json_response(answer)


def _feedback_items(body: Any) -> list[Mapping[str, Any]]:
    from cds_server.pipeline.feedback import validate_feedback

    return validate_feedback(body)


def _record(service_id: str, body: Any, status: int, payload: Any, started: float) -> None:
    """Keep the invocation of a call that was not answered (an error answer) on its own."""
    if service_id not in SERVICES:
        return
    try:
        runtime().store.record_invocation(_invocation_row(service_id, body, status, payload, started))
    except Exception:  # losing an audit row must be loud, but must not turn an answer into a 500
        log.exception("could not record invocation %s", g.get("request_id"))


def _invocation_row(service_id: str, body: Any, status: int, payload: Any, started: float) -> dict[str, Any]:
    """The invocation and the answer (CRD found-37), minimised as ``audit.audit_copy`` says."""
    safe = audit_copy(body) if isinstance(body, dict) else None
    context = safe.get("context") if isinstance(safe, dict) else None
    return {
        "hook_instance": str((safe or {}).get("hookInstance") or "(none)")[:200],
        "service_id": service_id,
        "hook": SERVICES[service_id].hook,
        "patient_id": str(context.get("patientId"))[:200] if isinstance(context, dict) else None,
        "received_at": now(),
        "status": status,
        "duration_ms": (time.perf_counter() - started) * 1000,
        "request": safe,
        "response": payload,
    }


@bp.app_errorhandler(ServiceError)
def service_error(exc: ServiceError) -> Response:
    """Answer a ServiceError raised outside ``invoke`` with its OperationOutcome."""
    response = json_response(exc.outcome(), exc.status)
    if isinstance(exc, TemporarilyUnavailable):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@bp.app_errorhandler(sa.exc.DBAPIError)
def database_down(exc: sa.exc.DBAPIError) -> Response:
    """The database is unreachable (feedback, decision pages ...): 503 and Retry-After, not 500."""
    log.exception("database unavailable %s", g.get("request_id"))
    return service_error(UNAVAILABLE)


@bp.app_errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    """Answer Flask/Werkzeug HTTP errors (404, 405, 413 ...) as OperationOutcomes."""
    status = exc.code or 500
    if status == 413:
        too_large = PayloadTooLarge("The request body is too large")
        return json_response(too_large.outcome(), 413)
    outcome = operation_outcome([Issue(exc.description or exc.name)], "not-found" if status == 404 else "processing")
    return json_response(outcome, status)


@bp.app_errorhandler(Exception)
def unexpected(exc: Exception) -> Response:
    """Last resort: log it with the request id and answer an OperationOutcome, not an HTML page."""
    log.exception("unexpected error %s", g.get("request_id"))
    return json_response(operation_outcome([Issue("internal error")], "exception"), 500)
