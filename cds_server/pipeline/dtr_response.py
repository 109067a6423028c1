"""The QuestionnaireResponse a clinician starts from, and which of its items are still open.

One rule ties the card to the form: the items a decision still needs
(``open_questions``) are exactly the required items the pre-filled response
leaves unanswered. The card counts them, the package marks them, the adaptive
form asks them; everything the record or an earlier response already answers is
pre-filled instead, marked with the DTR ``information-origin`` extension (DTR
STU2 codes: ``auto`` filled by the service, ``override`` filled then changed by a
person, ``manual`` entered by a person).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from cds_server.engine import OrderDecision
from fhir_mappings.codes import arr
from fhir_mappings.questionnaire import Answers

ORIGIN = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/information-origin"
_VALUE_KEYS = {
    "boolean": "valueBoolean",
    "integer": "valueInteger",
    "decimal": "valueDecimal",
    "date": "valueDate",
    "string": "valueString",
}
Prefill = Mapping[str, Mapping[str, Any]]


def open_questions(decision: OrderDecision | Mapping[str, Any]) -> list[str]:
    """Return the linkIds a clinician must still answer for this decision, in the engine's order.

    The engine's questions (items that would settle an unknown criterion) minus
    those the pre-filled response answers (from the record or an earlier
    response). The card's count is ``len`` of this list; the package's required,
    unanswered items and the adaptive form's questions are this list.
    """
    if isinstance(decision, OrderDecision):
        questions, prefill = decision.questions, decision.prefill
    else:
        questions, prefill = decision.get("questions") or [], decision.get("prefill") or {}
    return [q for q in questions if q not in prefill]


def origin(code: str) -> dict[str, Any]:
    """The DTR information-origin extension with this source code."""
    return {"url": ORIGIN, "extension": [{"url": "source", "valueCode": code}]}


def answers_for(entry: Mapping[str, Any], system: str, code: str = "auto") -> list[dict[str, Any]]:
    """FHIR answers for one pre-fill entry (a list value is a repeating item's answers)."""
    values = entry["value"] if isinstance(entry["value"], list) else [entry["value"]]
    key = _VALUE_KEYS.get(entry["type"])
    out = []
    for value in values:
        answer: dict[str, Any] = {key: value} if key else {"valueCoding": {"system": system, "code": value}}
        answer["extension"] = [origin(code)]
        out.append(answer)
    return out


def prefilled_response(
    questionnaire: Mapping[str, Any],
    prefill: Prefill,
    subject: Mapping[str, Any] | None,
    authored: str,
    system: str,
) -> dict[str, Any]:
    """Return an in-progress QuestionnaireResponse with what the record and earlier responses answer.

    Top-level items are sections. A repeating group (earlier procedures) is never
    pre-filled: its instances cannot be rebuilt from answers read item by item.
    """

    def fill(items: Iterable[Mapping[str, Any]], sections: bool = False) -> list[dict[str, Any]]:
        out = []
        for item in items:
            if sections:
                children = fill(item.get("item") or [])
                if children:
                    out.append({"linkId": item["linkId"], "text": item["text"], "item": children})
            elif item["linkId"] in prefill:
                answers = answers_for(prefill[item["linkId"]], system)
                out.append({"linkId": item["linkId"], "text": item["text"], "answer": answers})
        return out

    response: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "status": "in-progress",
        "questionnaire": f"{questionnaire['url']}|{questionnaire['version']}",
        "authored": authored,
        "item": fill(questionnaire["item"], sections=True),
    }
    if subject:
        response["subject"] = dict(subject)
    if not response["item"]:
        del response["item"]
    return response


def required_unanswered(questionnaire: Mapping[str, Any], response: Mapping[str, Any]) -> list[str]:
    """Return the linkIds of required items the response does not answer, in questionnaire order."""
    answered = {link for link, values in _answered(response.get("item") or []).items() if values}
    return [link for link in _required(questionnaire.get("item") or []) if link not in answered]


def _required(items: Iterable[Mapping[str, Any]]) -> list[str]:
    out = []
    for item in items:
        if item.get("required"):
            out.append(item["linkId"])
        out += _required(item.get("item") or [])
    return out


def _answered(items: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in items:
        out[item["linkId"]] = list(item.get("answer") or []) or list(item.get("item") or [])
        out.update(_answered(item.get("item") or []))
    return out


def mark_origins(response: Mapping[str, Any], prefill: Prefill) -> dict[str, Any]:
    """Return the response with an information-origin on every answer that has none.

    ``auto`` when the answer is the value the service pre-filled, ``override``
    when a person changed a pre-filled value, ``manual`` when nothing was pre-filled.
    """
    given = Answers([response])

    def origin_of(link_id: str) -> str:
        entry = prefill.get(link_id)
        if entry is None:
            return "manual"
        offered = entry["value"] if isinstance(entry["value"], list) else [entry["value"]]
        now = [a.value.isoformat() if isinstance(a.value, date) else a.value for a in given.get(link_id)]
        return "auto" if now == offered else "override"

    def walk(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            copy = dict(item)
            if "answer" in item:
                code = origin_of(item["linkId"])
                copy["answer"] = [_with_origin(a, code) for a in item["answer"]]
            if "item" in item:
                copy["item"] = walk(item["item"])
            out.append(copy)
        return out

    return {**response, "item": walk(response["item"])} if "item" in response else dict(response)


def _with_origin(answer: Mapping[str, Any], code: str) -> dict[str, Any]:
    if any(isinstance(e, Mapping) and e.get("url") == ORIGIN for e in arr(answer.get("extension"))):
        return dict(answer)
    return {**answer, "extension": [*arr(answer.get("extension")), origin(code)]}
