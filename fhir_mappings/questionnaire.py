"""Answers from Da Vinci DTR QuestionnaireResponses, with their provenance.

An answer is evidence like any coded resource: it carries a reference
(``QuestionnaireResponse/id#linkId``) so an explanation can say where a fact
came from. When several responses answer the same item, the most recently
authored one (compared in UTC) wins: a clinician correcting an earlier answer.

Fail closed (product-decisions.md §1): an answer that cannot be read still speaks
for its item, so an older answer never counts in its place; the item is then
*unreadable*. So is an item two responses answer differently when neither can be
shown to be later (the same ``authored``, or one without a readable ``authored``),
an item that is not repeating but holds several answers or appears twice, and every
item of a response whose ``item`` list itself cannot be read. A response with no
``authored`` (it is optional) is ordered by ``meta.lastUpdated``; one with neither
cannot be ordered, so its answers must agree with the latest ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

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


class ItemKind(NamedTuple):
    """What an item takes: its type, the codes a choice offers, whether it repeats, its unit."""

    type: str
    options: frozenset[str] = frozenset()
    repeats: bool = False
    unit: str | None = None
    system: str | None = None  # the code system of its options: a coding from another system is not read


_TYPED: tuple[tuple[str, Any], ...] = (
    ("valueBoolean", lambda v: isinstance(v, bool)),
    ("valueInteger", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    ("valueDecimal", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    ("valueString", lambda v: isinstance(v, str)),
)
# Spellings of the units items declare (UCUM code, unit text): a quantity in another unit is not read.
_UNITS = ({"wk", "week", "weeks", "wks"}, {"%", "percent"}, {"d", "day", "days"}, {"mo", "month", "months"})


def _value(answer: Mapping[str, Any], kind: ItemKind | None = None) -> AnswerValue | None:
    """Return the Python value of one answer, or None when it cannot be read.

    It must hold exactly one ``value[x]``, of its own JSON type (``valueBoolean: "false"`` is not
    read as a string, which a yes/no criterion would take for "no"); a quantity must be plain (no
    comparator: "< 12" is not 12) and, when the item declares a unit, in that unit; a coding from
    another code system than the item's options is not one of them, whatever its code.
    """
    keys = [key for key in answer if key.startswith("value")]
    if len(keys) != 1:
        return None
    key, raw = keys[0], answer[keys[0]]
    for typed, fits_type in _TYPED:
        if key == typed:
            return raw if fits_type(raw) else None
    if key in ("valueDate", "valueDateTime"):
        return parse_date(raw)
    if key == "valueCoding":
        return _coding(raw, kind.system if kind else None)
    if key == "valueQuantity":
        return _quantity(raw, kind.unit if kind else None)
    return None


def _coding(raw: Any, system: str | None) -> AnswerValue | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("code"), str):
        return None
    given = raw.get("system")
    return raw["code"] if given is None or system is None or given == system else None


def _quantity(raw: Any, unit: str | None) -> AnswerValue | None:
    if not isinstance(raw, Mapping) or "comparator" in raw:
        return None
    value = raw.get("value")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    given = {str(raw[k]).strip().lower() for k in ("code", "unit") if isinstance(raw.get(k), str)}
    if unit and given and not any(given <= spellings and unit.lower() in spellings for spellings in _UNITS):
        return None if unit.lower() not in given else value
    return value


def fits(value: AnswerValue, kind: ItemKind | None) -> bool:
    """Whether a value is an answer the item can take: its type and, for a choice, one of its codes."""
    if kind is None:
        return True
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    checks = {
        "boolean": isinstance(value, bool),
        "integer": number and float(value).is_integer(),
        "decimal": number,
        "quantity": number,
        "date": isinstance(value, date),
        "choice": isinstance(value, str) and (not kind.options or value in kind.options),
        "open-choice": isinstance(value, str),
        "string": isinstance(value, str),
    }
    return checks.get(kind.type, True)


UNREADABLE: Any = object()  # what one response gives for an item whose answer cannot be read


@dataclass
class _Reading:
    """What one response says, item by item: the values, or UNREADABLE."""

    source: str
    authored: str
    instant: datetime | None
    values: dict[str, Any] = field(default_factory=dict)  # linkId -> tuple of values, or UNREADABLE
    groups: dict[str, Any] = field(default_factory=dict)  # linkId -> list of instances, or UNREADABLE
    whole_unreadable: bool = False  # its ``item`` list could not be read: it may speak for any item

    def says(self, table: str, link_id: str) -> Any:
        """What this response says of ``link_id`` (None: nothing)."""
        return UNREADABLE if self.whole_unreadable else getattr(self, table).get(link_id)


class _Reader:
    """Reads one response's items into a :class:`_Reading` (the rules of the module docstring)."""

    def __init__(self, kinds: Mapping[str, ItemKind]) -> None:
        self.kinds = kinds

    def read(self, qr: Mapping[str, Any], whole: bool = True) -> _Reading:
        """One response's reading; ``whole=False``: the response as a whole cannot be read."""
        source = f"QuestionnaireResponse/{qr.get('id') or 'contained'}"
        meta = qr.get("meta")
        updated = meta.get("lastUpdated") if isinstance(meta, Mapping) else None
        instant = _instant(qr.get("authored")) if qr.get("authored") is not None else _instant(updated)
        reading = _Reading(source, str(qr.get("authored") or ""), instant)
        items = qr.get("item")
        reading.whole_unreadable = not whole or (items is not None and not self._items(items, reading))
        return reading

    def _items(self, items: Any, reading: _Reading) -> bool:
        """Read a list of items; False when the list itself cannot be read (which item is lost is unknown)."""
        if not isinstance(items, list):
            return False
        seen: set[str] = set()
        for item in items:
            if not isinstance(item, Mapping) or not isinstance(item.get("linkId"), str):
                return False
            link_id = item["linkId"]
            kind = self.kinds.get(link_id)
            if (kind is not None and kind.type == "group") or ("answer" not in item and "item" in item):
                self._group(item, reading)
                continue
            values = self._answers(item, kind, reading)
            known = reading.values.get(link_id)
            if link_id in seen or values is UNREADABLE or (known is not None and known != values):
                reading.values[link_id] = UNREADABLE  # twice in one response: which answer is meant is not known
            elif values:
                reading.values[link_id] = values
            seen.add(link_id)
        return True

    def _answers(self, item: Mapping[str, Any], kind: ItemKind | None, reading: _Reading) -> Any:
        """The item's values (a tuple; empty when it has no ``answer``), or UNREADABLE."""
        if "answer" not in item:
            return ()
        raw = item["answer"]
        if not isinstance(raw, list) or not raw or "item" in item:  # qrs-1: not both answer and item
            return UNREADABLE
        if kind is not None and not kind.repeats and len(raw) > 1:
            return UNREADABLE  # two answers to a yes/no item: which one is meant is not known
        values = []
        for answer in raw:
            value = _value(answer, kind) if isinstance(answer, Mapping) else None
            if value is None or not fits(value, kind):
                return UNREADABLE
            if answer.get("item") is not None and not self._items(answer["item"], reading):
                reading.whole_unreadable = True
            values.append(value)
        return tuple(values)

    def _group(self, item: Mapping[str, Any], reading: _Reading) -> None:
        """One instance of a group: its children as an instance, and as items in their own right."""
        link_id, children = item["linkId"], item.get("item")
        inner = _Reading(reading.source, reading.authored, reading.instant)
        readable = "answer" not in item and self._items(children, inner)
        for child, values in inner.values.items():
            known = reading.values.get(child)
            if values is UNREADABLE or known is UNREADABLE:
                reading.values[child] = UNREADABLE
            else:
                reading.values[child] = (*(known or ()), *values)
        reading.groups.update({k: v for k, v in inner.groups.items() if k not in reading.groups})
        unreadable = not readable or any(v is UNREADABLE for v in inner.values.values())
        if unreadable or reading.groups.get(link_id) is UNREADABLE:
            reading.groups[link_id] = UNREADABLE
            return
        instance = {k: v for k, v in inner.values.items() if v}
        reading.groups.setdefault(link_id, []).append(instance)


def _instant(authored: Any) -> datetime | None:
    """When a response was authored, in UTC (a date alone: its start in UTC); None when unreadable."""
    moment = parse_datetime(authored)
    if moment is not None:
        return moment.astimezone(UTC)
    day = parse_date(authored)
    return datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None


def _speaking(readings: list[_Reading], table: str, link_id: str) -> list[_Reading]:
    """The responses that speak last for an item: the newest that says something, its ties, and the undated."""
    saying = [r for r in readings if r.says(table, link_id) is not None]
    dated = [r for r in saying if r.instant is not None]
    newest = max((r.instant for r in dated), default=None)  # type: ignore[type-var]
    return [r for r in saying if r.instant is None or r.instant == newest]


class Answers:
    """All usable answers of a set of QuestionnaireResponses, by linkId."""

    def __init__(
        self,
        responses: Iterable[Mapping[str, Any]] = (),
        kinds: Mapping[str, ItemKind] | None = None,
        unreadable: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """Read ``responses``; with ``kinds`` (linkId -> :class:`ItemKind`) an answer must also fit its item.

        ``unreadable``: responses that cannot be read at all (a status not understood); each may
        have answered any item, as a response whose item list cannot be read.
        """
        reader = _Reader(kinds or {})
        self._readings = [reader.read(qr) for qr in responses] + [reader.read(qr, whole=False) for qr in unreadable]
        self._answers: dict[str, list[Answer]] = {}
        self._groups: dict[str, list[GroupAnswer]] = {}
        self._unreadable: dict[str, str] = {}  # linkId -> the response whose answer to it could not be read
        self._blanket = next((r.source for r in self._readings if r.whole_unreadable), None)
        for link_id in {k for r in self._readings for k in (*r.values, *r.groups)}:
            self._settle(link_id)

    def _settle(self, link_id: str) -> None:
        """Decide what the responses that speak last say of ``link_id``; disagreement is unreadable."""
        table = "groups" if any(link_id in r.groups for r in self._readings) else "values"
        speaking = _speaking(self._readings, table, link_id)
        said = [r.says(table, link_id) for r in speaking]
        if any(s is UNREADABLE for s in said) or any(s != said[0] for s in said):
            lost = [r.source for r, s in zip(speaking, said, strict=True) if s is UNREADABLE]
            self._unreadable[link_id] = lost[0] if lost else speaking[0].source
            return
        ref = f"{speaking[0].source}#{link_id}"
        if table == "values":
            self._answers[link_id] = [Answer(link_id, v, ref, speaking[0].authored) for v in said[0]]
        else:
            self._groups[link_id] = [GroupAnswer(link_id, instance, ref) for instance in said[0]]

    def unreadable(self) -> dict[str, str]:
        """The items whose most recent answer could not be read, and the response that gave it."""
        return dict(self._unreadable)

    @property
    def any_unreadable(self) -> bool:
        """Whether some item's most recent answer could not be read (most calls: none)."""
        return bool(self._unreadable) or self._blanket is not None

    def unreadable_source(self, link_id: str) -> str | None:
        """The response whose answer to ``link_id`` could not be read (it is then not answered), or None.

        A response whose item list cannot be read may have answered any item: an item no other
        response answers is unreadable through it.
        """
        return self._unreadable.get(link_id) or (
            self._blanket if link_id not in self._answers and link_id not in self._groups else None
        )

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
