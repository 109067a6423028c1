"""Pages people read: the guideline (one anchor per service and criterion) and every decision.

Both answer JSON for machines and HTML for reviewers, by content negotiation
(``Accept``). Decision pages are as protected as the hook endpoints.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request

from cds_server.engine import CarePath
from cds_server.engine.model import Group, Node, Ref
from cds_server.errors import Issue, UnknownService
from cds_server.pipeline.card_text import PlainWords, plain_words
from cds_server.web.auth import readable_by_caller
from cds_server.web.wire import base_url, json_response

pages = Blueprint("pages", __name__)


def wants_html() -> bool:
    """True when the client prefers HTML (a browser), else JSON."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"], default="application/json")
    return best == "text/html" and request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"]


def _carepath(cp_id: str) -> CarePath:
    for cp in current_app.extensions["cds"].carepaths:
        if cp.id == cp_id:
            return cp
    raise UnknownService(f"No CarePath {cp_id[:40]!r}", [Issue(f"unknown CarePath {cp_id[:40]!r}")])


def _rule(node: Node, carepath: CarePath) -> dict[str, Any]:
    if isinstance(node, Group):
        return {
            "id": node.id,
            "text": node.text,
            "cite": node.cite,
            "kind": node.op,
            "children": [_rule(c, carepath) for c in node.children],
        }
    if isinstance(node, Ref):
        return {
            "id": node.id,
            "text": f"{node.text} (same as {node.target})",
            "cite": node.cite,
            "kind": "ref",
            "children": [],
        }
    return {"id": node.id, "text": node.text, "cite": node.cite, "kind": "leaf", "children": []}


@pages.get("/carepaths/<cp_id>")
def guideline(cp_id: str) -> Response:
    """The guideline as encoded: services, criteria (each with an anchor), parameters."""
    carepath = _carepath(cp_id)
    services = [
        {
            "id": s.id,
            "title": s.title,
            "cite": s.cite,
            "codes": s.code_rows,
            "groups": [(kind, _rule(node, carepath)) for kind, node in s.groups.items()],
        }
        for s in carepath.services
    ]
    if not wants_html():
        return json_response(
            {
                "id": carepath.id,
                "version": carepath.version,
                "title": carepath.title,
                "services": [{**s, "groups": dict(s["groups"])} for s in services],
                "parameters": {p.name: p.value for p in carepath.parameters.values()},
            }
        )
    html = render_template(
        "carepath.html", cp=carepath, services=services, parameters=list(carepath.parameters.values())
    )
    return Response(html, mimetype="text/html")


@pages.get("/determinations/<assertion_id>")
def determination(assertion_id: str) -> Response:
    """Everything behind one coverage assertion: criteria, evidence, parameters, answers, authorization."""
    stored = current_app.extensions["cds"].store.assertion(assertion_id)
    if stored is None or not readable_by_caller(stored):  # another client's decision: as if unknown
        raise UnknownService(f"No decision {assertion_id[:40]!r}", [Issue(f"unknown decision {assertion_id[:40]!r}")])
    body = _determination(stored)
    if not wants_html():
        return json_response(body)
    cp = body.get("carePath") or {}
    guideline_url = f"{base_url()}/carepaths/{cp.get('id')}" if cp else ""
    carepath = next((c for c in current_app.extensions["cds"].carepaths if c.id == cp.get("id")), None)
    words = plain_words(carepath) if carepath else None
    criteria = [_view(node, carepath, words) for node in body["criteria"]] if carepath and words else []
    html = render_template(
        "determination.html",
        d=body,
        criteria=criteria,
        questions=[_question_text(carepath, q) for q in body["questions"]],
        outcome=OUTCOME_WORDS.get(body["outcome"], body["outcome"]),
        guideline_url=guideline_url,
    )
    return Response(html, mimetype="text/html")


# A criterion's result in words and in a colour by what it means for the order: for a non-indication
# (a contraindication, a red flag ruling the service out) "met" means present, which is bad news.
_MEANING = {
    (False, "met"): ("good", "met"),
    (False, "not-met"): ("bad", "not met"),
    (False, "unknown"): ("open", "not documented"),
    (True, "met"): ("bad", "present"),
    (True, "not-met"): ("good", "not present"),
    (True, "unknown"): ("open", "not documented"),
}
OUTCOME_WORDS = {
    "criteria-met": "criteria met",
    "not-met": "criteria not met",
    "contraindicated": "may not be appropriate",
    "documentation-needed": "documentation needed",
    "not-applicable": "outside the guideline",
}


def _view(node: dict[str, Any], carepath: CarePath, words: PlainWords) -> dict[str, Any]:
    """One criterion of a stored decision as the page shows it: colour by meaning, facts and parameters in words."""
    tone, label = _MEANING[(node.get("kind") == "non-indication", node["result"])]
    return {
        **node,
        "tone": tone,
        "label": label,
        "fact": words.fact(node.get("reason", "")),
        "parameters": [_parameter(carepath, k, v) for k, v in (node.get("parameters") or {}).items()],
        "questions": [_question_text(carepath, q) for q in node.get("questions", [])],
        "children": [_view(child, carepath, words) for child in node.get("children", [])],
    }


def _parameter(carepath: CarePath, name: str, value: Any) -> dict[str, str]:
    """A CarePath parameter as words: its name split, its value read out, its meaning from the CarePath."""
    known = carepath.parameters.get(name)
    return {"name": _uncamel(name), "value": _value_words(value), "meaning": known.description if known else ""}


def _value_words(value: Any) -> str:
    """A parameter value read out: booleans as yes/no, lists joined, combinations as "all of (…)"."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return "; ".join(f"{_uncamel(str(k))} of ({_value_words(v)})" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_words(v) for v in value)
    if isinstance(value, str):
        return _uncamel(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _uncamel(name: str) -> str:
    return re.sub(r"(?<=[a-z])([A-Z])", r" \1", name).lower()


def _question_text(carepath: CarePath | None, link_id: str) -> str:
    question = carepath.questions.get(link_id) if carepath else None
    return question.text if question else link_id


def _determination(stored: dict[str, Any]) -> dict[str, Any]:
    decision = stored["decision"].get("decision") or {}
    info = {
        p["url"]: next(v for k, v in p.items() if k.startswith("value"))
        for p in stored["decision"]["coverageInformation"]["extension"]
    }
    carepath = None
    if stored.get("carepath_id"):
        title = next(
            (cp.title for cp in current_app.extensions["cds"].carepaths if cp.id == stored["carepath_id"]),
            stored["carepath_id"],
        )
        carepath = {"id": stored["carepath_id"], "version": stored["carepath_version"], "title": title}
    return {
        "assertionId": stored["assertion_id"],
        "order": stored["order_ref"],
        "coverage": stored["coverage_ref"],
        "patient": stored.get("patient_id"),
        "createdAt": _instant(stored["created_at"]),
        "hookInstance": stored.get("hook_instance"),
        "decidedMs": stored.get("decided_ms"),
        "carePath": carepath,
        "service": decision.get("service"),
        "outcome": stored["outcome"],
        "summary": decision.get("summary", ""),
        "evaluationDate": decision.get("evaluationDate"),
        "criteria": decision.get("criteria", []),
        "questions": decision.get("questions", []),
        "failing": decision.get("failing", []),
        "answersUsed": decision.get("answersUsed", []),
        "authorization": {"number": stored["pa_id"], "expires": info.get("expiry-date")}
        if stored.get("pa_id")
        else None,
        "coverageInformation": {
            "covered": info.get("covered"),
            "paNeeded": info.get("pa-needed"),
            "extension": stored["decision"]["coverageInformation"],
        },
    }


def _instant(value: Any) -> Any:
    """An ISO instant with its zone: SQLite hands back naive datetimes for UTC values stored aware."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value
