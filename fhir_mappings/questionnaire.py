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


_TYPED: tuple[tuple[str, Any], ...] = (
    ("valueBoolean", lambda v: isinstance(v, bool)),
    ("valueInteger", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    ("valueDecimal", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    ("valueString", lambda v: isinstance(v, str)),
)

ItemKind = tuple[str, frozenset[str]]  # an item's type and, for a choice, the codes it offers


def _value(answer: Mapping[str, Any]) -> AnswerValue | None:
    """Return the Python value of one QuestionnaireResponse answer, or None when it cannot be read.

    Each ``value[x]`` must hold its own JSON type: ``valueBoolean: "false"`` is not read as a
    string (which a boolean criterion would then take for "no").
    """
    for key, fits in _TYPED:
        if key in answer:
            return answer[key] if fits(answer[key]) else None
    for key in ("valueDate", "valueDateTime"):
        parsed = parse_date(answer.get(key))
        if parsed:
            return parsed
    coding = answer.get("valueCoding")
    if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
        return coding["code"]
    quantity = answer.get("valueQuantity")
    if isinstance(quantity, Mapping) and isinstance(quantity.get("value"), (int, float)):
        return quantity["value"] if not isinstance(quantity["value"], bool) else None
    return None


def fits(value: AnswerValue, kind: ItemKind | None) -> bool:
    """Whether a value is an answer the item can take: its type and, for a choice, one of its codes."""
    if kind is None:
        return True
    item_type, options = kind
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    checks = {
        "boolean": isinstance(value, bool),
        "integer": number and float(value).is_integer(),
        "decimal": number,
        "quantity": number,
        "date": isinstance(value, date),
        "choice": isinstance(value, str) and (not options or value in options),
        "open-choice": isinstance(value, str),
        "string": isinstance(value, str),
    }
    return checks.get(item_type, True)


class Answers:
    """All usable answers of a set of QuestionnaireResponses, by linkId."""

    def __init__(
        self, responses: Iterable[Mapping[str, Any]] = (), kinds: Mapping[str, ItemKind] | None = None
    ) -> None:
        """Read ``responses``; with ``kinds`` (linkId -> item type and codes) an answer must also fit its item."""
        self._kinds = kinds or {}
        self._answers: dict[str, list[Answer]] = {}
        self._groups: dict[str, list[GroupAnswer]] = {}
        self._unreadable: dict[str, str] = {}  # linkId -> the response whose answer to it could not be read
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
                if any(self._child_unreadable(child) for child in arr(children)):
                    self._unreadable.setdefault(link_id, source)  # a lost date would lose a prior session
                self._groups.setdefault(link_id, []).append(
                    GroupAnswer(link_id, _collect(children), f"{source}#{link_id}")
                )
                self._walk(children, source, authored)
            if self._settled_by_newer(link_id, source):
                continue  # a more recent response already answered this item
            if _unreadable(item.get("answer"), self._kinds.get(link_id)):
                self._unreadable[link_id] = source
                self._answers.pop(link_id, None)
                continue
            for raw in answers:
                value = _value(raw)
                if value is not None:
                    self._answers.setdefault(link_id, []).append(
                        Answer(link_id, value, f"{source}#{link_id}", authored)
                    )
                if raw.get("item"):
                    self._walk(raw["item"], source, authored)

    def _child_unreadable(self, child: Any) -> bool:
        """Whether one item of a group instance is not an item or holds an answer that cannot be read."""
        if not isinstance(child, Mapping) or not isinstance(child.get("linkId"), str):
            return True
        return _unreadable(child.get("answer"), self._kinds.get(child["linkId"]))

    def _settled_by_newer(self, link_id: str, source: str) -> bool:
        """Whether a more recent response than ``source`` answered ``link_id``, readably or not.

        An answer that cannot be read still settles which response speaks for the item: it
        may be the clinician's correction of an older answer, so the older one must not count
        in its place (the item is asked again; product-decisions.md §1, not understood).
        """
        for newer in (self._answers.get(link_id, [None])[0], self._unreadable.get(link_id)):
            newer_source = newer.source.split("#")[0] if isinstance(newer, Answer) else newer
            if newer_source is not None and newer_source != source:
                return True
        return False

    def unreadable(self) -> dict[str, str]:
        """The items whose most recent answer could not be read, and the response that gave it."""
        return dict(self._unreadable)

    @property
    def any_unreadable(self) -> bool:
        """Whether some item's most recent answer could not be read (most calls: none)."""
        return bool(self._unreadable)

    def unreadable_source(self, link_id: str) -> str | None:
        """The response whose answer to ``link_id`` could not be read (it is then not answered), or None."""
        return self._unreadable.get(link_id)

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


def _unreadable(raw: Any, kind: ItemKind | None) -> bool:
    """Whether an item's ``answer`` holds something that is not a readable answer to the item.

    One unreadable value makes the whole item unreadable: in a repeating answer the value
    lost could be the one that matters.
    """
    if raw is None:
        return False
    if not isinstance(raw, list):
        return True
    for answer in raw:
        if not isinstance(answer, Mapping):
            return True
        value = _value(answer)
        if (value is None and not answer.get("item")) or (value is not None and not fits(value, kind)):
            return True
    return False


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
