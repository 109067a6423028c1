"""Stage 1, the request: the CDS Hooks envelope, the hook's context and the CRD extensions, checked.

What leaves this stage is a :class:`~cds_server.pipeline.call.Call` whose body is known to be
well formed, or a 400/422 OperationOutcome; and the FHIR client the later stages read through.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cds_server.errors import CrdViolation, InvalidRequest, Issue, Problems
from cds_server.pipeline.call import Call, Runtime
from cds_server.pipeline.fhir_client import FhirClient
from cds_server.pipeline.options import CONFIGURATION_OPTIONS
from cds_server.pipeline.request_schema import ENVELOPE, check
from cds_server.records.json_text import surely_without_empties
from cds_server.urls import http_url_problem
from hooks import HookService

log = logging.getLogger(__name__)
CONFIG_KEY = "davinci-crd.configuration"
VERSION_KEY = "davinci-crd.requestedVersion"


def validate_request(service: HookService, body: Any, versions: Sequence[str], now: datetime) -> Call:
    """Check the envelope, the hook's context and the CRD extensions.

    :raises InvalidRequest: CDS Hooks violations (400).
    :raises CrdViolation: CRD-only violations (422).
    """
    body = drop_empty_values(body)
    check(body, ENVELOPE, "$", "The request is not a valid CDS Hooks request")
    problem = http_url_problem(body["fhirServer"]) if "fhirServer" in body else None
    if problem:
        raise InvalidRequest("fhirServer is not a usable URL", [Issue(f"fhirServer {problem}", "$.fhirServer")])
    if body["hook"] != service.hook:
        raise InvalidRequest(
            f"This service answers {service.hook}, not {body['hook']}",
            [Issue(f"hook must be {service.hook!r}", "$.hook")],
        )
    if isinstance(body["context"], Mapping):
        body = {**body, "context": service.normalise_context(body["context"])}
    check(body["context"], service.context_schema, "$.context", f"The {service.hook} context is not valid")
    problems = Problems()
    for message, location in service.crd_checks(body["context"]):
        problems.add(message, "$." + location)
    call = Call(service, body, now)
    _read_extensions(call, body.get("extension") or {}, versions, problems)
    problems.raise_if_any(CrdViolation, "The request breaks Da Vinci CRD rules")
    return call


def drop_empty_values(body: Any) -> Any:
    """Read ``""``, ``[]`` and ``{}`` inside draft orders and ``fhirAuthorization`` as absent.

    Real clients send them before a field is filled: the CDS Hooks sandbox's PAMA tab sends
    ``"code": {"coding": [{}]}`` and ``"reasonCode": []``, the Da Vinci CRD request generator
    ``fhirAuthorization.access_token: ""`` when no auth server is configured. CDS Hooks and FHIR JSON
    forbid empty values, but refusing them (400) leaves such a client with nothing on screen; what they
    mean is unambiguous: nothing there. A warning names each dropped element (never a value). ``null``
    and everything else that cannot be read still get 400. An order left without a code has no billing
    code and is decided as such (conditional, never no-auth). A ``fhirAuthorization`` left without an
    ``access_token`` carries no token at all and is dropped whole: the FHIR server is then called
    without one, as for a client that sends no ``fhirAuthorization``.
    """
    if not isinstance(body, Mapping):
        return body
    dropped: list[str] = []
    out = dict(body)
    auth = body.get("fhirAuthorization")
    if isinstance(auth, Mapping):
        kept = _without_empties(auth, "$.fhirAuthorization", dropped)
        if not isinstance(kept, Mapping) or "access_token" not in kept:
            if isinstance(kept, Mapping) and kept:
                dropped.append("$.fhirAuthorization (no access_token)")
            out.pop("fhirAuthorization")
        else:
            out["fhirAuthorization"] = kept
    context = body.get("context")
    orders = context.get("draftOrders") if isinstance(context, Mapping) else None
    if isinstance(orders, Mapping) and isinstance(orders.get("entry"), list) and not surely_without_empties(orders):
        out["context"] = {**context, "draftOrders": {**orders, "entry": _orders_without_empties(orders, dropped)}}
    if not dropped:
        return body
    log.warning("empty values read as absent: %s", ", ".join(dropped))
    return out


_ABSENT = object()


def _orders_without_empties(orders: Mapping[str, Any], dropped: list[str]) -> list[Any]:
    """The draft orders' entries, each resource without its empty values."""
    entries = []
    for i, entry in enumerate(orders["entry"]):
        if isinstance(entry, Mapping) and isinstance(entry.get("resource"), Mapping):
            where = f"$.context.draftOrders.entry[{i}].resource"
            resource = _without_empties(entry["resource"], where, dropped)
            entry = {**entry, "resource": resource if resource is not _ABSENT else {}}
        entries.append(entry)
    return entries


def _without_empties(value: Any, path: str, dropped: list[str]) -> Any:
    """``value`` without its empty strings, arrays and objects (recursively); ``_ABSENT`` when nothing is left."""
    if isinstance(value, Mapping):
        kept = {}
        for key, item in value.items():
            item = _without_empties(item, f"{path}.{key}", dropped)
            if item is not _ABSENT:
                kept[key] = item
        if not kept:
            if not value:
                dropped.append(path)
            return _ABSENT
        return kept
    if isinstance(value, list):
        found = [_without_empties(item, f"{path}[{i}]", dropped) for i, item in enumerate(value)]
        items = [item for item in found if item is not _ABSENT]
        if not items:
            if not value:
                dropped.append(path)
            return _ABSENT
        return items
    if value == "":
        dropped.append(path)
        return _ABSENT
    return value


@functools.cache
def _option_types() -> dict[str, str]:
    """The type discovery declares for each option (an option the service offers must get that type)."""
    return {str(o["code"]): str(o["type"]) for o in CONFIGURATION_OPTIONS}


def _read_extensions(call: Call, extension: Mapping[str, Any], versions: Sequence[str], problems: Problems) -> None:
    config = extension.get(CONFIG_KEY)
    if config is not None:
        if not isinstance(config, Mapping):
            problems.add("davinci-crd.configuration must be an object", f"$.extension.{CONFIG_KEY}")
        else:
            for code, value in config.items():
                declared = _option_types().get(str(code))
                ok = (
                    isinstance(value, bool)
                    if declared == "boolean"
                    else (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
                    if declared == "integer"
                    else isinstance(value, bool) or (isinstance(value, int) and value >= 0)
                )
                if ok:
                    call.configuration[code] = value
                else:
                    wanted = {"boolean": "a boolean", "integer": "a non-negative integer"}.get(
                        declared or "", "a boolean or a non-negative integer"
                    )
                    problems.add(f"{code} takes {wanted}", f"$.extension.{CONFIG_KEY}.{code}")
    requested = extension.get(VERSION_KEY)
    if requested is not None:
        if requested not in versions:
            problems.add(
                f"requested CRD version {requested!r} is not one of {', '.join(versions)}", f"$.extension.{VERSION_KEY}"
            )
        else:
            call.version = requested
    elif versions:
        call.version = versions[-1]


def fhir_client(runtime: Runtime, call: Call) -> FhirClient | None:
    """Return a client for the call's fhirServer, or None when the call gave none."""
    server = call.body.get("fhirServer")
    if not server:
        return None
    auth = call.body.get("fhirAuthorization") or {}
    s = runtime.settings
    return FhirClient(
        runtime.session,
        server,
        auth.get("access_token"),
        float(s["FHIR_TIMEOUT_SECONDS"]),
        int(s["FHIR_MAX_PAGES"]),
        int(s["FHIR_MAX_RESOURCES"]),
        deadline=call.started + float(s["CALL_BUDGET_SECONDS"]),
        breaker=runtime.breaker,
        max_bytes=int(s["FHIR_MAX_RESPONSE_BYTES"]),
    )
