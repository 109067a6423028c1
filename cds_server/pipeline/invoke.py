"""One hook call, as a pipeline of small named stages.

validate the request → find the orders → get the patient's data (prefetch,
then the EHR) → check the Coverage → decide each order with the engine →
turn decisions into coverage information (and later cards) → keep records.
Each stage raises a :class:`~cds_server.errors.ServiceError` for the HTTP
layer to answer, or returns data for the next one.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import requests
from sqlalchemy.engine import Connection

from cds_server import links
from cds_server.carepath_store import terminology_for
from cds_server.engine import CarePath, OrderDecision, evaluate_orders, governs
from cds_server.errors import CrdViolation, DataUnavailable, InvalidRequest, Issue, Problems, TooManyOrders
from cds_server.pipeline import cards
from cds_server.pipeline import coverage_info as ci
from cds_server.pipeline.coverage import CoverageCheck, select_coverage
from cds_server.pipeline.fhir_client import CircuitBreaker, FhirClient, FhirError
from cds_server.pipeline.options import CONFIGURATION_OPTIONS
from cds_server.pipeline.prefetch import HISTORY_KEYS, PatientData, fetch_referenced_medications, resolve, templates_for
from cds_server.pipeline.request_schema import ENVELOPE, check
from cds_server.records.store import Store
from cds_server.urls import http_url_problem
from fhir_mappings.codes import arr, obj
from fhir_mappings.orders import ORDER_TYPES, InvalidOrderError, Order, read_order, validate_order
from fhir_mappings.record import PatientRecord, foreign_patient_elements
from hooks import HookService, OrderTarget
from hooks.base import InvalidContext
from hooks.order_dispatch import MissingOrder

log = logging.getLogger(__name__)
CONFIG_KEY = "davinci-crd.configuration"
VERSION_KEY = "davinci-crd.requestedVersion"


@dataclass
class Runtime:
    """Long-lived parts shared by every call of one app."""

    carepaths: list[CarePath]
    store: Store
    settings: Mapping[str, Any]
    session: requests.Session
    pool: ThreadPoolExecutor
    clock: Callable[[], datetime]
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    link_secret: str | None = None  # signs decision links (``links``) when client authentication is on
    id_key: str = ""  # makes assertion ids unguessable from the request (``coverage_info.assertion_id``)

    def decision_url(self, base: str, assertion_id: str) -> str:
        """The decision page for an assertion: a signed, expiring link when pages need authentication."""
        ttl = int(self.settings.get("LINK_TTL_DAYS", 90)) * 86400
        return links.decision_url(base, assertion_id, self.link_secret, ttl)


@dataclass
class Call:
    """One hook call as it moves through the stages."""

    service: HookService
    body: Mapping[str, Any]
    now: datetime
    configuration: dict[str, Any] = field(default_factory=dict)
    version: str = "2.2"
    client: FhirClient | None = None
    started: float = field(default_factory=time.monotonic)
    decide_ms: float | None = None  # time the engine took for this call's orders, kept with each assertion
    requester: Mapping[str, Any] = field(default_factory=dict)  # the verified token's claims (auth on)

    @property
    def context(self) -> Mapping[str, Any]:
        return self.body["context"]  # type: ignore[no-any-return]

    @property
    def today(self) -> date:
        return self.now.date()

    def option(self, code: str, default: Any) -> Any:
        value = self.configuration.get(code, default)
        return value if type(value) is type(default) else default


@dataclass
class OrderResult:
    """What the call decided for one order."""

    target: OrderTarget
    order: Order
    decision: OrderDecision | None
    assertion: ci.Assertion
    new: bool


@dataclass
class CallResult:
    """Everything a call produced: the response body and what the HTTP layer logs."""

    response: dict[str, Any]
    results: list[OrderResult]
    coverage: CoverageCheck | None


# --- stage 1: the request --------------------------------------------------------


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
    if isinstance(orders, Mapping) and isinstance(orders.get("entry"), list):
        entries = []
        for i, entry in enumerate(orders["entry"]):
            if isinstance(entry, Mapping) and isinstance(entry.get("resource"), Mapping):
                where = f"$.context.draftOrders.entry[{i}].resource"
                resource = _without_empties(entry["resource"], where, dropped)
                entry = {**entry, "resource": resource if resource is not _ABSENT else {}}
            entries.append(entry)
        out["context"] = {**context, "draftOrders": {**orders, "entry": entries}}
    if not dropped:
        return body
    log.warning("empty values read as absent: %s", ", ".join(dropped))
    return out


_ABSENT = object()


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


# --- stage 2: the orders ---------------------------------------------------------


def find_orders(call: Call, carepaths: Sequence[CarePath], limit: int = 50) -> list[tuple[OrderTarget, Order]]:
    """Return the orders in scope, each for the call's patient and validated against its FHIR model.

    :raises TooManyOrders: the context carries more than ``limit`` orders (413), checked before any work.
    :raises CrdViolation: an order, or an Appointment, names someone other than ``patientId`` (422).
    :raises DataUnavailable: an order the context only references cannot be read (412).
    :raises InvalidRequest: an order is not a valid FHIR resource (400).
    """
    field_ = call.service.orders_field
    _limit_orders(call, limit)
    held = _context_resources(call)
    _refuse_other_patients(call, [(resource, path, True) for path, resource in held])
    reader = _reader(call)
    fetched: list[Mapping[str, Any]] = []  # what ``read`` returned: orders the context only references

    def read(ref: str) -> Mapping[str, Any] | None:
        found = reader(ref)
        if found is not None:
            fetched.append(found)
        return found

    try:
        targets = call.service.find_orders(call.context, read)
    except MissingOrder as exc:
        where = f"$.context.{exc.args[1]}" if len(exc.args) > 1 else f"$.context.{field_}"
        raise DataUnavailable(
            f"Could not read {exc.args[0]} from the prefetch or the FHIR server",
            [Issue(f"{exc.args[0]} is not available", where)],
        ) from exc
    except InvalidContext as exc:
        raise InvalidRequest(
            f"The {call.service.hook} context is not valid", [Issue(exc.args[0], f"$.context.{exc.args[1]}")]
        ) from exc
    in_context = {id(resource) for _, resource in held}
    by_reference = {id(resource) for resource in fetched}
    _refuse_other_patients(
        call,
        [(t.order, _where(call, t), id(t.order) not in by_reference) for t in targets if id(t.order) not in in_context],
    )
    problems = Problems()
    found = []
    for index, target in enumerate(targets):
        empty = _first_empty(target.order, f"$.context.{field_}[{index}]")
        if empty:
            problems.add("FHIR JSON allows no null or empty values", empty)
            continue
        status = target.order.get("status")
        if call.service.order_statuses and status not in call.service.order_statuses:
            allowed = " or ".join(sorted(call.service.order_statuses))
            bundle = isinstance(call.context.get(field_), Mapping)
            where = f"$.context.{field_}.entry[{index}].resource" if bundle else _where(call, target)
            problems.add(f"{call.service.hook} decides only orders whose status is {allowed}", f"{where}.status")
            continue
        order = read_order(target.order, index)
        try:
            validate_order(target.order)
        except InvalidOrderError as exc:
            # An order a CarePath must decide has to be valid FHIR; one outside every CarePath is passed
            # through (its answer is "no-auth" whatever its flaws, e.g. the Inferno sample NutritionOrder).
            if governed(carepaths, [order]) or order.type not in ORDER_TYPES:
                problems.add(str(exc), f"$.context.{field_}")
                continue
            log.info("passing through an invalid order no CarePath governs: %s", order.ref)
        found.append((target, order))
    problems.raise_if_any(InvalidRequest, "An order is not a valid FHIR resource")
    return found


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
    prefetched = _prefetched_by_ref(call.body.get("prefetch"))
    server = call.body.get("fhirServer")
    base = server.rstrip("/") + "/" if isinstance(server, str) and server else None

    def read(ref: str) -> Mapping[str, Any] | None:
        on_server = True
        if "://" in ref:
            tail = "/".join(ref.rstrip("/").split("/")[-2:])
            on_server = base is not None and ref.startswith(base) and ref[len(base) :].rstrip("/") == tail
            ref = tail
        if ref in prefetched:
            return prefetched[ref]
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


# --- stage 3: the data ----------------------------------------------------------


def gather(runtime: Runtime, call: Call, orders: Sequence[Order]) -> PatientData:
    """Get the Coverage and, when some order needs a decision, the patient's history."""
    keys = ("coverage", *HISTORY_KEYS) if governed(runtime.carepaths, orders) else ("coverage", "patient")
    prefetch = call.body.get("prefetch") or {}
    data = resolve(templates_for(call.service), keys, call.context, prefetch, call.client, runtime.pool)
    if "medicationRequests" in keys:
        fetch_referenced_medications(data, call.client, runtime.pool)
    _supporting_info(call, orders, data)
    return data


def _supporting_info(call: Call, orders: Sequence[Order], data: PatientData) -> None:
    """Add documentation the orders point to (``supportingInfo``): contained, already known, or read from the EHR.

    This is how a completed DTR QuestionnaireResponse reaches the next signing when the
    EHR attaches it to the order rather than storing it where the prefetch search finds it.
    """
    known = {f"{r.get('resourceType')}/{r.get('id')}" for r in data.all_resources()}
    found: list[Mapping[str, Any]] = []
    for order in orders:
        contained = {c.get("id"): c for c in arr(order.raw.get("contained")) if isinstance(c, Mapping)}
        for info in arr(order.raw.get("supportingInfo")):
            ref = info.get("reference") if isinstance(info, Mapping) else None
            if not isinstance(ref, str):
                continue
            if ref.startswith("#") and ref[1:] in contained:
                found.append(contained[ref[1:]])
            elif ref.startswith("QuestionnaireResponse/") and ref not in known:
                fetched = _read_supporting(call, ref, data)
                if fetched is not None:
                    found.append(fetched)
    if found:
        data.resources["supportingInfo"] = found


def _read_supporting(call: Call, ref: str, data: PatientData) -> Mapping[str, Any] | None:
    if call.client is None:
        data.unavailable["supportingInfo"] = f"not prefetched and no fhirServer to read {ref} from"
        return None
    try:
        return call.client.read(ref)
    except FhirError as exc:
        data.unavailable["supportingInfo"] = str(exc)
        return None


def check_coverage(runtime: Runtime, call: Call, data: PatientData) -> CoverageCheck:
    """Return the call's single Coverage.

    :raises DataUnavailable: the Coverage could not be obtained at all (412).
    :raises CoverageProblem: none, several, or a payer this endpoint does not serve (400).
    """
    if "coverage" in data.unavailable:
        raise DataUnavailable(
            "The patient's Coverage could not be obtained", [Issue(data.unavailable["coverage"], "$.prefetch.coverage")]
        )
    return select_coverage(
        data.resources.get("coverage", []), call.context["patientId"], runtime.settings["PAYER_IDENTIFIERS"]
    )


def history_problem(data: PatientData) -> str | None:
    """Return why the history is incomplete for technical reasons, or None.

    :raises DataUnavailable: history neither prefetched nor queryable (412).
    """
    missing = {k: why for k, why in data.unavailable.items() if k != "coverage"}
    if not missing:
        return None
    unreachable = [k for k, why in missing.items() if why.startswith("not prefetched and no fhirServer")]
    if unreachable:
        raise DataUnavailable(
            "Required patient data was not prefetched and there is no FHIR server to query",
            [Issue(f"prefetch key {k!r} is missing", f"$.prefetch.{k}") for k in unreachable],
        )
    return "The patient's record could not be read from the EHR: " + "; ".join(sorted(set(missing.values())))


# --- stage 4: decisions and coverage information --------------------------------------


def decide(
    runtime: Runtime,
    call: Call,
    pairs: Sequence[tuple[OrderTarget, Order]],
    data: PatientData,
    coverage: CoverageCheck,
    technical: str | None,
) -> list[OrderResult]:
    """Decide every order and build its coverage information."""
    orders = [order for _, order in pairs]
    decisions: list[OrderDecision | None] = [None] * len(orders)
    if technical is None:
        try:
            began = time.perf_counter()
            record = PatientRecord(
                data.all_resources(),
                call.context.get("patientId"),
                terminology_for(runtime.carepaths),
                data.incomplete_by_type(),
            )
            decisions = list(evaluate_orders(runtime.carepaths, orders, record, call.today))
            call.decide_ms = round((time.perf_counter() - began) * 1000, 3)
        except Exception:  # an engine defect must not become a 500 or a silent approval (CRD resp-43)
            log.exception("decision failed for hook instance %s", call.body.get("hookInstance"))
            technical = "An internal error prevented the determination."
    return [
        _safe_result(runtime, call, target, order, decision, coverage, technical)
        for (target, order), decision in zip(pairs, decisions, strict=True)
    ]


def _safe_result(
    runtime: Runtime,
    call: Call,
    target: OrderTarget,
    order: Order,
    decision: OrderDecision | None,
    coverage: CoverageCheck,
    technical: str | None,
) -> OrderResult:
    """Build one order's result; a failure (e.g. issuing an authorization number) is a technical answer."""
    try:
        return _result(runtime, call, target, order, decision, coverage, technical)
    except Exception:
        log.exception("coverage information failed for %s", order.ref)
        return _result(runtime, call, target, order, None, coverage, "An internal error prevented the determination.")


def _result(
    runtime: Runtime,
    call: Call,
    target: OrderTarget,
    order: Order,
    decision: OrderDecision | None,
    coverage: CoverageCheck,
    technical: str | None,
) -> OrderResult:
    not_covered = coverage.not_covered(order.authored_on or call.today)
    if not_covered is not None:
        assertion = ci.not_covered_assertion(*not_covered)
    elif technical is not None or decision is None:
        assertion = ci.technical_assertion(technical or "No determination could be made.")
    else:
        assertion = ci.assertion_for(
            decision,
            questionnaire_url(runtime, decision),
            call.service.clinical_documentation,
            runtime.settings["AUTO_APPROVAL"],
            question_texts(runtime, decision),
        )
    assertion.coverage_ref = coverage.ref
    assertion.date = call.today
    assertion.billing_codes = billing_codes(order)
    assertion.assertion_id = ci.assertion_id(target.order, coverage.ref, assertion, decision, key=runtime.id_key)
    return OrderResult(target, order, decision, assertion, new=True)  # numbers and ``new``: see ``record``


def question_texts(runtime: Runtime, decision: OrderDecision) -> dict[str, str]:
    """Return the question texts of the decision's CarePath, by linkId."""
    for cp in runtime.carepaths:
        if cp.id == decision.carepath_id:
            return {q.link_id: q.text for q in cp.questions.values()}
    return {}


def _authorize(runtime: Runtime, call: Call, result: OrderResult, conn: Connection) -> None:
    """Attach the assertion's authorization number; an expired one is replaced by a new assertion and number."""
    assertion, valid_days = result.assertion, int(runtime.settings["AUTHORIZATION_VALID_DAYS"])
    expires_on = call.today + timedelta(days=valid_days)
    number, expires = runtime.store.issue_authorization(conn, assertion.assertion_id, expires_on)
    if expires < call.today:
        assertion.assertion_id = ci.assertion_id(
            result.target.order,
            assertion.coverage_ref,
            assertion,
            result.decision,
            salt=f"renewed {call.today.isoformat()}",
            key=runtime.id_key,
        )
        number, expires = runtime.store.issue_authorization(conn, assertion.assertion_id, expires_on)
    assertion.satisfied_pa_id = number
    assertion.expiry_date = expires


def questionnaire_url(runtime: Runtime, decision: OrderDecision) -> str | None:
    """Return the canonical URL (with version) of the service's documentation questionnaire."""
    for cp in runtime.carepaths:
        if cp.id == decision.carepath_id and decision.service_id:
            return f"{cp.questionnaire_base.rstrip('/')}/{cp.id}-{decision.service_id}|{cp.version}"
    return None


def billing_codes(order: Order) -> list[dict[str, str]]:
    """Return the order's CPT/HCPCS codings, as the claim will use them."""
    from fhir_mappings.systems import CPT, HCPCS

    return [{"system": s, "code": c} for s, c in sorted(order.codes) if s in (CPT, HCPCS)]


# --- stage 5: the response ------------------------------------------------------


def system_actions(call: Call, results: Sequence[OrderResult]) -> list[dict[str, Any]]:
    """One update per in-scope order with new coverage information (CRD resp-29, resp-35)."""
    if not call.option("coverage-info", True):
        return []
    actions = []
    for result in results:
        if not result.new:
            continue
        resource = ci.annotate(result.target.annotated, result.assertion)  # a contained order: its carrier
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        actions.append({"type": "update", "description": f"Add coverage information to {ref}", "resource": resource})
    return actions


def record(runtime: Runtime, call: Call, results: Sequence[OrderResult]) -> None:
    """Issue the authorization numbers and keep every assertion with its decision (CRD found-11), in one
    transaction: a worker killed half-way leaves no number without the decision it was issued for."""
    first_ids = [r.assertion.assertion_id for r in results]

    def keep(conn: Connection) -> None:
        for result, assertion_id in zip(results, first_ids, strict=True):
            result.assertion.assertion_id = assertion_id  # a retry starts again from the same ids
            if result.assertion.pa_needed == "satisfied":
                _authorize(runtime, call, result, conn)
            runtime.store.keep_assertion(conn, _assertion_row(call, result))

    runtime.store.in_one_transaction(keep)
    for result in results:
        result.new = result.assertion.assertion_id not in ci.existing_assertion_ids(result.target.annotated)


def _assertion_row(call: Call, result: OrderResult) -> dict[str, Any]:
    decision = result.decision.to_dict() if result.decision else None
    return {
        "assertion_id": result.assertion.assertion_id,
        "order_ref": result.order.ref,
        "coverage_ref": result.assertion.coverage_ref,
        "patient_id": call.context.get("patientId"),
        "carepath_id": result.decision.carepath_id if result.decision else None,
        "carepath_version": result.decision.carepath_version if result.decision else None,
        "service_id": result.decision.service_id if result.decision else None,
        "outcome": result.decision.outcome.value if result.decision else result.assertion.covered,
        "pa_id": result.assertion.satisfied_pa_id,
        "decision": {"decision": decision, "coverageInformation": result.assertion.extension()},
        "created_at": call.now,
        "hook_instance": str(call.body.get("hookInstance", ""))[:200] or None,
        "decided_ms": call.decide_ms,
        "client_iss": _text(call.requester.get("iss"), 300),
        "client_tenant": _text(call.requester.get("tenant"), 200),
    }


def _text(value: Any, limit: int) -> str | None:
    return str(value)[:limit] if isinstance(value, str) and value else None


def build_cards(runtime: Runtime, call: Call, results: Sequence[OrderResult], base_url: str) -> list[dict[str, Any]]:
    """Cards for every decided order, filtered by the call's configuration (CRD dev-14)."""
    ctx = cards.CardContext(
        runtime.settings["PAYER_NAME"],
        call.version,
        base_url,
        len(results) > 1,
        lambda assertion_id: runtime.decision_url(base_url, assertion_id),
    )
    carepaths = {cp.id: cp for cp in runtime.carepaths}
    orders = [r.target.order for r in results]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for result in results:
        decision = result.decision
        if decision is None or decision.carepath_id not in carepaths:
            continue
        label = order_label(result.order)
        if decision.applicability == "outside-cohort":
            out.append(cards.outside_cohort_card(ctx, decision, label))
            continue
        carepath = carepaths[decision.carepath_id]
        out.append(
            cards.decision_card(
                ctx, carepath, decision, label, result.assertion.satisfied_pa_id, call.service.clinical_documentation
            )
        )
        others = [o for o in orders if o is not result.target.order]
        for card in cards.alternative_cards(ctx, decision, result.target.order, others, carepath):
            key = cards.suggestion_key(card)
            if key not in seen:  # several orders can point to the same better order
                seen.add(key)
                out.append(card)
        if decision.service_id:
            out.append(cards.reference_card(ctx, carepath, decision, result.assertion.assertion_id))
    return cards.apply_configuration(out, call.configuration)


def order_label(order: Order) -> str:
    """A human label for an order: what it is, and which resource."""
    what = order.code_text or ", ".join(code for _, code in sorted(order.codes)) or order.type
    return f"{what} ({order.ref})"


def handle(
    runtime: Runtime, service: HookService, body: Any, base_url: str = "", requester: Mapping[str, Any] | None = None
) -> CallResult:
    """Run one hook call through every stage and return its response (``requester``: the token's claims)."""
    call = validate_request(service, body, runtime.settings["CRD_VERSIONS"], runtime.clock())
    call.requester = requester or {}
    call.client = fhir_client(runtime, call)
    pairs = find_orders(call, runtime.carepaths, int(runtime.settings["MAX_ORDERS_PER_CALL"]))
    data = gather(runtime, call, [order for _, order in pairs])
    coverage = check_coverage(runtime, call, data)
    days = [order.authored_on or call.today for _, order in pairs]
    technical = history_problem(data) if coverage.usable_for_any(days) else None
    results = decide(runtime, call, pairs, data, coverage, technical)
    record(runtime, call, results)
    response: dict[str, Any] = {"cards": build_cards(runtime, call, results, base_url)}
    actions = system_actions(call, results)
    if actions:
        response["systemActions"] = actions
    return CallResult(response, results, coverage)
