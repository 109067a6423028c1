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
from cds_server.pipeline.coverage_info import existing_assertion_ids
from cds_server.pipeline.questionnaires import all_questionnaires, answer_system, prefilled_response
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
    """A minimal CapabilityStatement: Questionnaire read/search and $questionnaire-package."""
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
                                }
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
        raise UnknownService(f"No Questionnaire {qid!r}", [Issue(f"Questionnaire/{qid} not found")])
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
    """DTR $questionnaire-package: the questionnaires for these orders, pre-filled where we can."""
    from cds_server.web.wire import read_json

    body = read_json()
    if not isinstance(body, Mapping) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("Send a FHIR Parameters resource", [Issue("resourceType must be Parameters", "$")])
    params = [p for p in arr(body.get("parameter")) if isinstance(p, Mapping)]
    wanted = [p.get("valueCanonical") or p.get("valueUri") for p in params if p.get("name") == "questionnaire"]
    orders = [p["resource"] for p in params if p.get("name") == "order" and isinstance(p.get("resource"), Mapping)]
    coverage = [p for p in params if p.get("name") == "coverage"]
    if not coverage:
        raise InvalidRequest("The coverage parameter is required", [Issue("no coverage parameter", "$.parameter")])
    packages = [_package(q, orders) for q in _selected(wanted, orders)]
    if not packages:
        raise UnknownService(
            "No questionnaire applies to these orders",
            [Issue("no questionnaire matches the requested canonicals or orders", "$.parameter")],
        )
    return fhir_response(
        {"resourceType": "Parameters", "parameter": [{"name": "PackageBundle", "resource": p} for p in packages]}
    )


def _selected(wanted: list[Any], orders: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Questionnaires named in the request, else those of the services these orders were decided by."""
    questionnaires = list(_questionnaires().values())
    if wanted:
        return [q for q in questionnaires if any(isinstance(w, str) and _url_matches(q, w) for w in wanted)]
    store = current_app.extensions["cds"].store
    chosen = []
    for order in orders:
        for assertion_id in existing_assertion_ids(order):
            stored = store.assertion(assertion_id)
            if stored and stored.get("carepath_id") and stored.get("service_id"):
                qid = f"{stored['carepath_id']}-{stored['service_id']}"
                chosen += [q for q in questionnaires if q["id"] == qid and q not in chosen]
    return chosen


def _package(questionnaire: dict[str, Any], orders: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One Bundle: the Questionnaire, and a response pre-filled from the decision behind the order, if any."""
    entries: list[dict[str, Any]] = [{"fullUrl": questionnaire["url"], "resource": questionnaire}]
    decision, order = _decision_for(questionnaire, orders)
    if decision is not None:
        runtime = current_app.extensions["cds"]
        carepath = next(cp for cp in runtime.carepaths if cp.id == decision["carePath"]["id"])
        response = prefilled_response(
            questionnaire,
            decision.get("prefill") or {},
            obj(order).get("subject"),
            runtime.clock().isoformat(),
            answer_system(carepath),
        )
        entries.append({"fullUrl": f"urn:uuid:prefill-{questionnaire['id']}", "resource": response})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _decision_for(questionnaire: Mapping[str, Any], orders: list[Mapping[str, Any]]) -> tuple[Any, Any]:
    store = current_app.extensions["cds"].store
    for order in orders:
        for assertion_id in existing_assertion_ids(order):
            stored = store.assertion(assertion_id)
            decision = obj(stored).get("decision", {}).get("decision")
            if decision and f"{stored['carepath_id']}-{stored['service_id']}" == questionnaire["id"]:
                return decision, order
    return None, None
