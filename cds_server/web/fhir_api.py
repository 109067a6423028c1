"""The service's own small FHIR endpoint: documentation questionnaires for Da Vinci DTR.

``GET /fhir/Questionnaire/{id}``, ``GET /fhir/Questionnaire?url=...`` and
``POST /fhir/Questionnaire/$questionnaire-package`` (DTR): a Bundle per
questionnaire with the Questionnaire and, when this service already decided
the order, a QuestionnaireResponse pre-filled from the record (each answer
marked with the DTR information-origin extension).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, request

from cds_server.errors import InvalidRequest, Issue, ServiceError, UnknownService
from cds_server.pipeline import adaptive
from cds_server.pipeline.adaptive_input import check_items, check_readable, read_request
from cds_server.pipeline.coverage_info import existing_assertion_ids
from cds_server.pipeline.dtr_response import mark_origins, prefilled_response
from cds_server.pipeline.questionnaires import all_questionnaires, answer_system, tailored
from cds_server.web.auth import readable_by_caller
from cds_server.web.wire import base_url
from fhir_mappings.codes import arr, obj

fhir = Blueprint("fhir", __name__, url_prefix="/fhir")
FHIR_JSON = "application/fhir+json"


def fhir_response(body: Any, status: int = 200) -> Response:
    """Serialise a FHIR resource."""
    return Response(json.dumps(body, separators=(",", ":")), status=status, mimetype=FHIR_JSON)


def _questionnaires() -> dict[str, dict[str, Any]]:
    runtime = current_app.extensions["cds"]
    cache = current_app.extensions.setdefault("cds-questionnaires", {})
    if not cache:
        cache.update(all_questionnaires(runtime.carepaths))
    return cache


@fhir.errorhandler(ServiceError)
def fhir_error(exc: ServiceError) -> Response:
    return fhir_response(exc.outcome(), exc.status)


@fhir.get("/metadata")
def metadata() -> Response:
    """A minimal CapabilityStatement: Questionnaire read/search, $questionnaire-package and $next-question."""
    return fhir_response(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2024-01-01",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": "Questionnaire",
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [{"name": "url", "type": "uri"}, {"name": "_id", "type": "token"}],
                            "operation": [
                                {
                                    "name": "questionnaire-package",
                                    "definition": "http://hl7.org/fhir/us/davinci-dtr/OperationDefinition/questionnaire-package",
                                },
                                {
                                    "name": "next-question",
                                    "definition": "http://hl7.org/fhir/us/davinci-dtr/OperationDefinition/DTR-Questionnaire-next-question",
                                },
                            ],
                        }
                    ],
                }
            ],
        }
    )


@fhir.get("/Questionnaire/<qid>")
def read_questionnaire(qid: str) -> Response:
    """Read one Questionnaire."""
    found = _questionnaires().get(qid)
    if found is None:
        raise UnknownService(f"No Questionnaire {qid[:40]!r}", [Issue(f"Questionnaire/{qid[:40]} not found")])
    return fhir_response(found)


@fhir.get("/Questionnaire")
def search_questionnaires() -> Response:
    """Search by ``url`` (with or without ``|version``) or ``_id``; no parameter lists them all."""
    url = request.args.get("url")
    qid = request.args.get("_id")
    matches = []
    for questionnaire in _questionnaires().values():
        if url is not None and not _url_matches(questionnaire, url):
            continue
        if qid is not None and questionnaire["id"] != qid:
            continue
        matches.append(questionnaire)
    return fhir_response(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "entry": [
                {
                    "fullUrl": f"{request.host_url}fhir/Questionnaire/{q['id']}",
                    "resource": q,
                    "search": {"mode": "match"},
                }
                for q in matches
            ],
        }
    )


def _url_matches(questionnaire: Mapping[str, Any], url: str) -> bool:
    base, _, version = url.partition("|")
    return questionnaire["url"] == base and (not version or questionnaire["version"] == version)


@fhir.post("/Questionnaire/$questionnaire-package")
def questionnaire_package() -> Response:
    """DTR $questionnaire-package: the questionnaires for these orders, pre-filled where we can.

    A client that renders adaptive forms asks for ``<canonical>-adaptive`` in the
    ``questionnaire`` parameter and gets the empty adaptive Questionnaire that
    ``$next-question`` fills; every other client gets the static one.
    """
    from cds_server.web.wire import read_json

    body = read_json()
    if not isinstance(body, Mapping) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("Send a FHIR Parameters resource", [Issue("resourceType must be Parameters", "$")])
    params = [p for p in arr(body.get("parameter")) if isinstance(p, Mapping)]
    wanted = [p.get("valueCanonical") or p.get("valueUri") for p in params if p.get("name") == "questionnaire"]
    wanted = [w for w in wanted if isinstance(w, str)]
    orders = [p["resource"] for p in params if p.get("name") == "order" and isinstance(p.get("resource"), Mapping)]
    coverage = [p for p in params if p.get("name") == "coverage"]
    if not coverage:
        raise InvalidRequest("The coverage parameter is required", [Issue("no coverage parameter", "$.parameter")])
    adaptive_wanted = [_static_of(w) for w in wanted if _static_of(w) != w]
    packages = [_package(q, orders) for q in _selected([w for w in wanted if _static_of(w) == w], orders, not wanted)]
    packages += [_adaptive_package(q, orders) for q in _selected(adaptive_wanted, orders, False)]
    if not packages:
        raise UnknownService(
            "No questionnaire applies to these orders",
            [Issue("no questionnaire matches the requested canonicals or orders", "$.parameter")],
        )
    return fhir_response(
        {"resourceType": "Parameters", "parameter": [{"name": "PackageBundle", "resource": p} for p in packages]}
    )


def _static_of(canonical: str) -> str:
    """The static canonical an adaptive one (``<url>-adaptive|version``) derives from; others unchanged."""
    url, bar, version = canonical.partition("|")
    return f"{url.removesuffix('-adaptive')}{bar}{version}"


def _selected(wanted: list[str], orders: list[Mapping[str, Any]], by_orders: bool) -> list[dict[str, Any]]:
    """Questionnaires named in the request, else (``by_orders``) those of the services these orders were decided by."""
    questionnaires = list(_questionnaires().values())
    if wanted or not by_orders:
        return [q for q in questionnaires if any(_url_matches(q, w) for w in wanted)]
    chosen = []
    for order in orders:
        for stored in _stored_for(order):
            if stored.get("carepath_id") and stored.get("service_id"):
                qid = f"{stored['carepath_id']}-{stored['service_id']}"
                chosen += [q for q in questionnaires if q["id"] == qid and q not in chosen]
    return chosen


def _stored_for(order: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The assertions this service keeps for the coverage-assertion-ids the order carries."""
    store = current_app.extensions["cds"].store
    found = [store.assertion(assertion_id) for assertion_id in existing_assertion_ids(order)]
    return [row for row in found if row and readable_by_caller(row)]  # another client's decision: as if unknown


def _package(questionnaire: dict[str, Any], orders: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One Bundle: the Questionnaire, and a response pre-filled from the decision behind the order, if any.

    With a decision, the Questionnaire requires exactly the items that decision
    still needs (``tailored``), and the response pre-fills what the record and
    earlier responses answer: its required, unanswered items are the open questions.
    """
    row, order = _decision_for(questionnaire, orders)
    if row is None:
        return _bundle(questionnaire)
    decision = row["decision"]["decision"]
    runtime = current_app.extensions["cds"]
    form = tailored(questionnaire, decision.get("questions") or [])
    response = prefilled_response(
        form,
        decision.get("prefill") or {},
        obj(order).get("subject"),
        runtime.clock().isoformat(),
        answer_system(_carepath(decision)),
    )
    return _bundle(form, {"fullUrl": f"urn:uuid:prefill-{questionnaire['id']}", "resource": response})


def _adaptive_package(questionnaire: dict[str, Any], orders: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One Bundle with the empty adaptive Questionnaire for the order's kept decision."""
    row, _ = _decision_for(questionnaire, orders)
    if row is None:
        raise UnknownService(
            "An adaptive form needs an order this service decided",
            [Issue("no order carries a coverage-assertion-id of this service for this questionnaire", "$.parameter")],
        )
    return _bundle(adaptive.adaptive_questionnaire(questionnaire, row["assertion_id"], f"{base_url()}/fhir"))


def _bundle(questionnaire: Mapping[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    entries = [{"fullUrl": questionnaire["url"], "resource": questionnaire}, *more]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _carepath(decision: Mapping[str, Any]) -> Any:
    runtime = current_app.extensions["cds"]
    return next(cp for cp in runtime.carepaths if cp.id == decision["carePath"]["id"])


def _decision_for(questionnaire: Mapping[str, Any], orders: list[Mapping[str, Any]]) -> tuple[Any, Any]:
    """The kept assertion (with its decision) behind one of these orders for this questionnaire, and the order."""
    for order in orders:
        for stored in _stored_for(order):
            decision = obj(stored).get("decision", {}).get("decision")
            if decision and f"{stored['carepath_id']}-{stored['service_id']}" == questionnaire["id"]:
                return stored, order
    return None, None


@fhir.post("/Questionnaire/$next-question")
def next_question() -> Response:
    """SDC/DTR $next-question: the next items of an adaptive form, or the form completed once settled."""
    from cds_server.web.wire import read_json

    ask = read_request(read_json())
    stored = current_app.extensions["cds"].store.assertion(ask.assertion_id)
    decision = obj(obj(stored).get("decision")).get("decision")
    if not decision or not decision.get("service") or not readable_by_caller(stored):
        raise UnknownService(
            "No decision of this service is kept for this form",
            [Issue("the coverage assertion named is unknown here", "contained[0].identifier")],
        )
    static = _questionnaires()[f"{stored['carepath_id']}-{stored['service_id']}"]
    definitions = adaptive.item_definitions(static)
    check_items(ask, definitions)
    carepath = _carepath(decision)
    check_readable(ask, carepath)
    answered = adaptive.step(ask.response, ask.contained, decision, carepath, definitions, answer_system(carepath))
    answered = mark_origins(answered, decision.get("prefill") or {})
    return fhir_response({"resourceType": "Parameters", "parameter": [{"name": "return", "resource": answered}]})
