"""The CDS Hooks HTTP surface: discovery, invocation, feedback. Two views plus feedback, all registry-driven.

Every error leaves as JSON: an OperationOutcome with the right 4xx status,
never a 500 page (an unexpected failure answers 500 with an OperationOutcome
and is logged with its request id).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cds_server.audit import audit_copy
from cds_server.discovery import discovery_document
from cds_server.errors import (
    InvalidRequest,
    Issue,
    PayloadTooLarge,
    ServiceError,
    TemporarilyUnavailable,
    UnknownService,
    UnsupportedMediaType,
    operation_outcome,
)
from cds_server.invoke import Runtime, handle
from cds_server.observability import CALLS, LATENCY, OUTCOMES
from cds_server.store import now
from hooks import SERVICES

log = logging.getLogger(__name__)
bp = Blueprint("cds", __name__)
JSON_TYPES = ("application/json", "application/fhir+json")


def runtime() -> Runtime:
    """Return the app's runtime (CarePaths, store, HTTP session, thread pool)."""
    found: Runtime = current_app.extensions["cds"]
    return found


def json_response(body: Any, status: int = 200) -> Response:
    """Serialise ``body`` as the response (application/json)."""
    # allow_nan=False: whatever happens, never answer with NaN/Infinity, which are not JSON.
    return Response(
        json.dumps(body, separators=(",", ":"), allow_nan=False), status=status, mimetype="application/json"
    )


@bp.get("/cds-services")
def discovery() -> Response:
    """CDS Hooks discovery: every service of the registry."""
    return json_response(discovery_document(runtime()))


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    """Call one service; every outcome (including errors) is kept as an invocation record."""
    started = time.perf_counter()
    body: Any = None
    try:
        service = SERVICES.get(service_id)
        if service is None:
            raise UnknownService(f"No service {service_id!r}", [Issue(f"unknown service id {service_id!r}")])
        body = read_json()
        result = handle(runtime(), service, body, base_url(), g.get("client"))
        status, payload = 200, result.response
        runtime().store.record_cards(service_id, str(body.get("hookInstance")), payload["cards"])
        for order in result.results:
            if order.decision is not None:
                OUTCOMES.labels(order.decision.service_id or "none", order.decision.outcome.value).inc()
    except ServiceError as exc:
        status, payload = exc.status, exc.outcome()
    except sa.exc.DBAPIError:  # the database is down (e.g. jti kept in Redis, so the guard did not notice)
        log.exception("database unavailable %s", g.get("request_id"))
        status, payload = 503, UNAVAILABLE.outcome()
    except Exception:  # a defect: answer an OperationOutcome and keep the record (CRD found-37)
        log.exception("unexpected error %s", g.get("request_id"))
        status, payload = 500, operation_outcome([Issue("internal error")], "exception")
    _record(service_id, body, status, payload, started)
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
    from cds_server.feedback import validate_feedback

    return validate_feedback(body)


def base_url() -> str:
    """Return the service's public base URL (configured, else the one this request came in on)."""
    from cds_server.auth import public_base_urls

    configured = public_base_urls(current_app.config.get("PUBLIC_BASE_URL"))
    return configured[0] if configured else request.host_url.rstrip("/")


def read_json() -> Any:
    """Parse the request body as JSON.

    :raises UnsupportedMediaType: the body is not declared as JSON (415).
    :raises InvalidRequest: the body is not JSON, or nests deeper than allowed (400).
    """
    mimetype = (request.mimetype or "").lower()
    if mimetype not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"Send the request as application/json, not {mimetype}"
            if mimetype
            else "Send the request as application/json"
        )
    limit_bytes = current_app.config.get("MAX_CONTENT_LENGTH")
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge as exc:  # declared too large: say so here, not as an internal error
        raise PayloadTooLarge(f"The request body is larger than {limit_bytes} bytes") from exc
    if limit_bytes and request.content_length is None and len(raw) >= int(limit_bytes):
        # A chunked body is cut at the limit rather than refused: a cut body is too large, not "not JSON".
        raise PayloadTooLarge(f"The request body is larger than {limit_bytes} bytes")
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest("The body is not valid JSON", [Issue(f"not JSON: {str(exc)[:120]}", "$")]) from exc
    limit = int(current_app.config["MAX_JSON_DEPTH"])
    if depth(body, limit) > limit:
        raise InvalidRequest(f"The JSON nests deeper than {limit} levels", [Issue("too deeply nested", "$")])
    # The strict parser refuses raw control characters, so only a \u escape can smuggle one in.
    bad = bad_text(body) if b"\\u" in raw else None
    if bad:
        raise InvalidRequest(
            "The body holds characters FHIR and CDS Hooks do not allow",
            [Issue(f"control character or unpaired surrogate in a string at {bad}", bad)],
        )
    return body


def _finite(text: str) -> float:
    """A number too large for a double (``1e400``) would become Infinity: not JSON, not storable."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259); Python would accept them."""
    raise ValueError(f"{name} is not allowed in JSON")


def bad_text(value: Any) -> str | None:
    """Return the path of the first string with a control character (FHIR forbids those below U+0020
    but tab, CR and LF) or an unpaired surrogate (not Unicode text), or None. Iterative, like ``depth``."""
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str) and _bad_chars(node):
            return path
        if isinstance(node, dict):
            for key, item in node.items():
                if _bad_chars(key):
                    return path
                stack.append((item, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node))
    return None


def depth(value: Any, limit: int) -> int:
    """Return the nesting depth of a JSON value (stops counting past ``limit``), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return deepest


_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def _bad_chars(text: str) -> bool:
    return _BAD_CHARS.search(text) is not None


def _record(service_id: str, body: Any, status: int, payload: Any, started: float) -> None:
    """Keep the invocation and the answer (CRD found-37), minimised as ``audit.audit_copy`` says."""
    service = SERVICES.get(service_id)
    if service is None:
        return
    try:
        safe = audit_copy(body) if isinstance(body, dict) else None
        context = safe.get("context") if isinstance(safe, dict) else None
        runtime().store.record_invocation(
            {
                "hook_instance": str((safe or {}).get("hookInstance") or "(none)")[:200],
                "service_id": service_id,
                "hook": service.hook,
                "patient_id": str(context.get("patientId"))[:200] if isinstance(context, dict) else None,
                "received_at": now(),
                "status": status,
                "duration_ms": (time.perf_counter() - started) * 1000,
                "request": safe,
                "response": payload,
            }
        )
    except Exception:  # losing an audit row must be loud, but must not turn an answer into a 500
        log.exception("could not record invocation %s", g.get("request_id"))


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
