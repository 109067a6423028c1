"""Answers from Da Vinci DTR QuestionnaireResponses, with their provenance.

An answer is evidence like any coded resource: it carries a reference
(``QuestionnaireResponse/id#linkId``) so an explanation can say where a fact
came from. When several responses answer the same item, the most recently
authored one wins (a clinician correcting an earlier answer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir_mappings.codes import arr
from fhir_mappings.dates import parse_date, parse_datetime

AnswerValue = bool | int | float | str | date


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer value to one item, and where it came from."""

    link_id: str
    value: AnswerValue
    source: str
    authored: str


@dataclass(frozen=True, slots=True)
class GroupAnswer:
    """One instance of a repeating group: its children's answers by linkId."""

    link_id: str
    items: Mapping[str, tuple[AnswerValue, ...]]
    source: str

    def first(self, link_id: str) -> AnswerValue | None:
        """Return the first answer to child item ``link_id``, or None."""
        values = self.items.get(link_id)
        return values[0] if values else None


def _value(answer: Mapping[str, Any]) -> AnswerValue | None:
    """Return the Python value of one QuestionnaireResponse answer."""
    for key in ("valueBoolean", "valueInteger", "valueDecimal", "valueString"):
        if key in answer and isinstance(answer[key], (bool, int, float, str)):
            return answer[key]
    for key in ("valueDate", "valueDateTime"):
        parsed = parse_date(answer.get(key))
        if parsed:
            return parsed
    coding = answer.get("valueCoding")
    if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
        return coding["code"]
    quantity = answer.get("valueQuantity")
    if isinstance(quantity, Mapping) and isinstance(quantity.get("value"), (int, float)):
        return quantity["value"]
    return None


class Answers:
    """All usable answers of a set of QuestionnaireResponses, by linkId."""

    def __init__(self, responses: Iterable[Mapping[str, Any]] = ()) -> None:
        self._answers: dict[str, list[Answer]] = {}
        self._groups: dict[str, list[GroupAnswer]] = {}
        ordered = sorted(responses, key=_authored_key, reverse=True)
        for qr in ordered:
            source = f"QuestionnaireResponse/{qr.get('id') or 'contained'}"
            self._walk(qr.get("item"), source, str(qr.get("authored") or ""))

    def _walk(self, items: Any, source: str, authored: str) -> None:
        for item in arr(items):  # a malformed ``item`` holds no answer: the criteria it would settle stay asked
            if not isinstance(item, Mapping) or not isinstance(item.get("linkId"), str):
                continue
            link_id = item["linkId"]
            answers = [a for a in arr(item.get("answer")) if isinstance(a, Mapping)]
            children = item.get("item")
            if children and not answers:
                known = self._groups.get(link_id)
                if known and known[0].source.split("#")[0] != source:
                    continue  # a more recent response already holds this group
                self._groups.setdefault(link_id, []).append(
                    GroupAnswer(link_id, _collect(children), f"{source}#{link_id}")
                )
                self._walk(children, source, authored)
            if link_id in self._answers and self._answers[link_id][0].source.split("#")[0] != source:
                continue  # a more recent response already answered this item
            for raw in answers:
                value = _value(raw)
                if value is not None:
                    self._answers.setdefault(link_id, []).append(
                        Answer(link_id, value, f"{source}#{link_id}", authored)
                    )
                if raw.get("item"):
                    self._walk(raw["item"], source, authored)

    def get(self, link_id: str) -> list[Answer]:
        """Return the answers to ``link_id`` from the most recent response that has one."""
        return list(self._answers.get(link_id, ()))

    def first(self, link_id: str) -> Answer | None:
        """Return the single answer to ``link_id``, or None."""
        found = self._answers.get(link_id)
        return found[0] if found else None

    def groups(self, link_id: str) -> list[GroupAnswer]:
        """Return every instance of the repeating group ``link_id``."""
        return list(self._groups.get(link_id, ()))

    def __bool__(self) -> bool:
        return bool(self._answers or self._groups)


def _collect(items: Any) -> dict[str, tuple[AnswerValue, ...]]:
    out: dict[str, list[AnswerValue]] = {}
    for item in arr(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("linkId"), str):
            continue
        for raw in arr(item.get("answer")):
            if isinstance(raw, Mapping):
                value = _value(raw)
                if value is not None:
                    out.setdefault(item["linkId"], []).append(value)
    return {k: tuple(v) for k, v in out.items()}


def _authored_key(qr: Mapping[str, Any]) -> str:
    parsed = parse_datetime(qr.get("authored"))
    if parsed:
        return parsed.isoformat()
    day = parse_date(qr.get("authored"))
    return day.isoformat() if day else ""


def answered_canonical(qr: Mapping[str, Any]) -> str | None:
    """Return the canonical (``url|version``) of the Questionnaire a response answers.

    A plain response names it in ``questionnaire``. An adaptive one (SDC
    ``$next-question``, DTR STU2) names its *contained* Questionnaire (``#id``),
    which says in ``derivedFrom`` which static Questionnaire its items come from:
    its answers answer that one.
    """
    canonical = qr.get("questionnaire")
    if not isinstance(canonical, str) or not canonical.startswith("#"):
        return canonical if isinstance(canonical, str) else None
    for resource in arr(qr.get("contained")):
        if isinstance(resource, Mapping) and resource.get("id") == canonical[1:]:
            derived = [d for d in arr(resource.get("derivedFrom")) if isinstance(d, str)]
            return derived[0] if derived else None
    return None
