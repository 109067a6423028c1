"""Reading a ``$next-question`` request: what is malformed is a 400 with an OperationOutcome, never a 500.

The request is a Parameters with one ``questionnaire-response``: a
QuestionnaireResponse whose ``questionnaire`` is ``#id`` of the adaptive
Questionnaire it contains (DTR ``dtr-questionnaireresponse-adapt``). Its items
must be ones this service asked, and its answers must be to items asked, each
of the item's type: the form is ours, so anything else was not made by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_server.engine import CarePath
from cds_server.errors import InvalidRequest, Issue
from cds_server.pipeline.adaptive import ASSERTION_SYSTEM
from fhir_mappings.codes import arr
from fhir_mappings.questionnaire import Answers


@dataclass(frozen=True)
class NextQuestionRequest:
    """A well-formed ``$next-question`` request."""

    response: Mapping[str, Any]
    contained: Mapping[str, Any]
    assertion_id: str


def read_request(body: Any) -> NextQuestionRequest:
    """Return the request's response, its adaptive Questionnaire and the coverage assertion it is for."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("Send a FHIR Parameters resource", [Issue("resourceType must be Parameters", "$")])
    params = [p for p in arr(body.get("parameter")) if isinstance(p, Mapping)]
    found = [p for p in params if p.get("name") == "questionnaire-response"]
    response = found[0].get("resource") if len(found) == 1 else None
    if not isinstance(response, Mapping) or response.get("resourceType") != "QuestionnaireResponse":
        raise _bad("exactly one questionnaire-response parameter holding a QuestionnaireResponse is required", "$")
    ref = response.get("questionnaire")
    contained = [
        r
        for r in arr(response.get("contained"))
        if isinstance(r, Mapping) and r.get("resourceType") == "Questionnaire" and f"#{r.get('id')}" == ref
    ]
    if len(contained) != 1:
        raise _bad("questionnaire must be '#id' of the adaptive Questionnaire the response contains", "questionnaire")
    ids = [
        i.get("value")
        for i in arr(contained[0].get("identifier"))
        if isinstance(i, Mapping) and i.get("system") == ASSERTION_SYSTEM and isinstance(i.get("value"), str)
    ]
    if len(ids) != 1:
        raise _bad("the contained Questionnaire does not name its coverage assertion", "contained[0].identifier")
    return NextQuestionRequest(response, contained[0], ids[0])


def check_items(request: NextQuestionRequest, definitions: Mapping[str, Mapping[str, Any]]) -> None:
    """Check that the form holds only items this service asks and that every answer fits its item."""
    asked: dict[str, str] = {}
    for item in _items(request.contained.get("item"), "contained[0].item"):
        if item["linkId"] not in definitions:
            raise _bad(f"item {_shown(item['linkId'])} is not one this service asks", "contained[0].item")
        asked[item["linkId"]] = str(definitions[item["linkId"]].get("type"))
        asked.update((c["linkId"], str(c.get("type"))) for c in _items(item.get("item"), "contained[0].item.item"))
    for item in _items(request.response.get("item"), "item"):
        _check_answers(item, asked, f"item[{item['linkId']}]")


def _check_answers(item: Mapping[str, Any], asked: Mapping[str, str], where: str) -> None:
    if item["linkId"] not in asked:
        raise _bad(f"answer to {_shown(item['linkId'])}, which was not asked", where)
    if item.get("answer") is not None and not isinstance(item.get("answer"), list):
        raise _bad(f"answer of {_shown(item['linkId'])} must be a list", where)
    for answer in arr(item.get("answer")):
        if not isinstance(answer, Mapping):
            raise _bad(f"answers to {_shown(item['linkId'])} must be objects", where)
        for child in _items(answer.get("item"), where):
            _check_answers(child, asked, f"{where}.answer.item")
    for child in _items(item.get("item"), where):
        _check_answers(child, asked, f"{where}.item")


def check_readable(request: NextQuestionRequest, carepath: CarePath) -> None:
    """Refuse answers the engine could not read (the reader's own rules: ``fhir_mappings.questionnaire``).

    An unreadable answer would leave its criterion open while the form counts the item as asked:
    the form would end and the next sign would still ask. The clinician is told now instead.
    """
    lost = Answers([request.response], carepath.answer_kinds).unreadable()
    if lost:
        shown = ", ".join(_shown(link_id) for link_id in sorted(lost)[:5])
        raise _bad(f"the answers to {shown} cannot be read as answers to those items", "item")


def _items(value: Any, where: str) -> list[Mapping[str, Any]]:
    if value is not None and not isinstance(value, list):
        raise _bad("item must be a list of items", where)
    items = arr(value)
    if not all(isinstance(i, Mapping) and isinstance(i.get("linkId"), str) for i in items):
        raise _bad("every item needs a linkId", where)
    return items


def _shown(link_id: str) -> str:
    """A linkId as an error names it: quoted and cut, so a message never carries what a caller smuggled in."""
    return repr(link_id[:40] + ("…" if len(link_id) > 40 else ""))


def _bad(message: str, where: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid $next-question request: {message}", [Issue(message, where)])
