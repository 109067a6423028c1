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
cannot be ordered, so its answers must agree with the latest ones, and a date alone or a
time without an offset spans its day in every time zone. Sections are transparent (an item
answered in two sections is answered twice); what sits below an unreadable part is still read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from fhir_mappings.codes import arr, obj
from fhir_mappings.dates import date_bounds, parse_date, parse_datetime

AnswerValue = bool | int | float | str | date


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer value to one item, and where it came from."""

    link_id: str
    value: AnswerValue
    source: str


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
    ("valueInteger", lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) <= _INT32),
    ("valueDecimal", lambda v: _finite_number(v)),
    ("valueString", lambda v: isinstance(v, str)),
)
_INT32 = 2_147_483_647  # FHIR integer
# Spellings of the units items declare (UCUM code, unit text): a quantity in another unit is not read.
_UNITS = ({"wk", "week", "weeks", "wks"}, {"%", "percent"}, {"d", "day", "days"}, {"mo", "month", "months"})


def _value(answer: Mapping[str, Any], kind: ItemKind | None = None) -> AnswerValue | None:
    """Return the Python value of one answer, or None when it cannot be read.

    It must hold exactly one ``value[x]``, of its own JSON type (``valueBoolean: "false"`` is not
    read as a string, which a yes/no criterion would take for "no"); a quantity must be plain (no
    comparator: "< 12" is not 12) and, when the item declares a unit, in that unit; a coding from
    another code system than the item's options is not one of them, whatever its code.
    """
    keys = [key for key in answer if isinstance(key, str) and key.startswith("value")]
    if len(keys) != 1:
        return None
    key, raw = keys[0], answer[keys[0]]
    for typed, fits_type in _TYPED:
        if key == typed:
            return raw if fits_type(raw) else None
    if key in ("valueDate", "valueDateTime"):
        return _full_date(raw)
    if key == "valueCoding":
        return _coding(raw, kind.system if kind else None)
    if key == "valueQuantity":
        return _quantity(raw, kind.unit if kind else None)
    return None


_FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _full_date(raw: Any) -> date | None:
    """A whole calendar date: ``2024`` or ``2024-03`` would have to pick a day for the clinician, so it is not read."""
    if not isinstance(raw, str):
        return None
    if _FULL_DATE.fullmatch(raw):
        return parse_date(raw)
    moment = parse_datetime(raw)  # a full dateTime with its offset: the day where it was written
    return moment.date() if moment is not None else None


def _coding(raw: Any, system: str | None) -> AnswerValue | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("code"), str):
        return None
    given = raw.get("system")
    return raw["code"] if given is None or system is None or given == system else None


def _unit_of(spelling: str) -> str:
    """The unit a spelling names (its alias set's first spelling), or the spelling itself."""
    text = spelling.strip().lower()
    return next((sorted(names)[0] for names in _UNITS if text in names), text)


def _quantity(raw: Any, unit: str | None) -> AnswerValue | None:
    if not isinstance(raw, Mapping) or "comparator" in raw:
        return None
    value = raw.get("value")
    if not _finite_number(value):
        return None
    named = {_unit_of(raw[k]) for k in ("code", "unit") if isinstance(raw.get(k), str)}
    if len(named) > 1 or (unit and named and named != {_unit_of(unit)}):
        return None  # the code and the unit disagree, or another unit than the item's
    return value


def _finite_number(value: Any) -> bool:
    """A JSON number a FHIR integer or decimal can hold: no bool, no NaN or infinity, no 400-digit integer."""
    if isinstance(value, bool):
        return False
    return (isinstance(value, int) and abs(value) < 10**18) or (isinstance(value, float) and math.isfinite(value))


def fits(value: AnswerValue, kind: ItemKind | None) -> bool:
    """Whether a value is an answer the item can take: its type and, for a choice, one of its codes."""
    if kind is None:
        return True
    number = _finite_number(value)
    checks = {
        "boolean": isinstance(value, bool),
        "integer": number and (isinstance(value, int) or float(value).is_integer()),
        "decimal": number,
        "quantity": number,
        "date": isinstance(value, date),
        "choice": isinstance(value, str) and (not kind.options or value in kind.options),
        "open-choice": isinstance(value, str),
        "string": isinstance(value, str),
    }
    return checks.get(kind.type, True)


UNREADABLE: Any = object()  # what one response gives for an item whose answer cannot be read
_EARLIEST_OFFSET, _LATEST_OFFSET = timedelta(hours=14), timedelta(hours=12)  # the widest UTC offsets


@dataclass
class _Reading:
    """What one response says, item by item (values, or UNREADABLE), and when it may have been written."""

    source: str
    earliest: datetime | None  # None: it cannot be placed in time at all
    latest: datetime | None
    values: dict[str, Any] = field(default_factory=dict)  # linkId -> tuple of values, or UNREADABLE
    groups: dict[str, Any] = field(default_factory=dict)  # linkId -> list of instances, or UNREADABLE
    whole_unreadable: bool = False  # part of it could not be read: it may speak for any item

    def says(self, table: str, link_id: str) -> Any:
        """What this response says of ``link_id`` (None: nothing)."""
        return UNREADABLE if self.whole_unreadable else getattr(self, table).get(link_id)


class _Reader:
    """Reads one response's items into a :class:`_Reading` (the rules of the module docstring).

    Sections (groups that do not repeat, or unknown containers) are transparent: their items are
    the response's items, so an item answered in two sections is answered twice. A repeating group
    (``hx.proc``) gives an instance per occurrence, wherever it occurs. Whatever cannot be read is
    kept as UNREADABLE, and what sits below it is still read: it may be a correction of any item.
    """

    def __init__(self, kinds: Mapping[str, ItemKind]) -> None:
        self.kinds = kinds

    def read(self, qr: Mapping[str, Any], whole: bool = True) -> _Reading:
        """One response's reading; ``whole=False``: the response as a whole cannot be read."""
        if not isinstance(qr, Mapping):
            return _Reading("QuestionnaireResponse/(unreadable)", None, None, whole_unreadable=True)
        meta = qr.get("meta")
        when = qr.get("authored") if qr.get("authored") is not None else obj(meta).get("lastUpdated")
        source = f"QuestionnaireResponse/{qr.get('id') or 'contained'}"
        reading = _Reading(source, *_interval(when))
        items = qr.get("item")
        reading.whole_unreadable = not whole or (items is not None and not self._items(items, reading))
        return reading

    def _items(self, items: Any, reading: _Reading) -> bool:
        """Read a list of items; False when some of it could not be read (which item it held is unknown)."""
        if not isinstance(items, list):
            return False
        complete = True
        for item in items:
            if not isinstance(item, Mapping) or not isinstance(item.get("linkId"), str):
                complete = False
                continue
            complete = self._item(item, reading) and complete
        return complete

    def _item(self, item: Mapping[str, Any], reading: _Reading) -> bool:
        link_id, kind = item["linkId"], self.kinds.get(item["linkId"])
        children = item.get("item")
        if kind is not None:
            repeating = kind.type == "group" and kind.repeats
        else:  # without kinds (nothing known of the items), every group is taken for a repeating one
            repeating = not self.kinds and "answer" not in item and children is not None
        if repeating:
            return self._instance(item, reading)
        if (kind is None or kind.type == "group") and "answer" not in item:
            return children is None or self._items(children, reading)  # a section: its items are the response's
        self._put(reading, link_id, self._answers(item, kind, reading))
        if children is None or children == []:
            return True
        if "answer" in item:  # qrs-1: items under both the question and its answers
            reading.values[link_id] = UNREADABLE
        return self._items(children, reading)

    @staticmethod
    def _put(reading: _Reading, link_id: str, values: Any) -> None:
        """File an item's values; the same item answered twice differently is UNREADABLE."""
        if values == ():
            return  # asked, not answered
        known = reading.values.get(link_id)
        reading.values[link_id] = UNREADABLE if values is UNREADABLE or known not in (None, values) else values

    def _answers(self, item: Mapping[str, Any], kind: ItemKind | None, reading: _Reading) -> Any:
        """The item's values (a tuple; empty when it has no ``answer``), or UNREADABLE; nested items are read."""
        if "answer" not in item:
            return ()
        raw = item["answer"]
        if not isinstance(raw, list) or not raw:
            return UNREADABLE
        lost = kind is not None and not kind.repeats and len(raw) > 1  # two answers to a yes/no item
        values = []
        for answer in raw:
            if not isinstance(answer, Mapping):
                lost = True
                continue
            nested = answer.get("item")
            if nested is not None and nested != [] and not self._items(nested, reading):
                reading.whole_unreadable = True
            value = _value(answer, kind)
            if value is None or not fits(value, kind):
                lost = True
            else:
                values.append(value)
        return UNREADABLE if lost else tuple(values)

    def _instance(self, item: Mapping[str, Any], reading: _Reading) -> bool:
        """One instance of a repeating group; one that cannot be read makes the whole group UNREADABLE."""
        link_id, children = item["linkId"], item.get("item")
        if "answer" not in item and (children is None or children == []):
            return True  # an empty instance says nothing
        inner = _Reading(reading.source, reading.earliest, reading.latest)
        complete = "answer" not in item and self._items(children, inner)
        for child, values in inner.values.items():  # also as items in their own right
            known = reading.values.get(child)
            joined = values is UNREADABLE or known is UNREADABLE
            reading.values[child] = UNREADABLE if joined else (*(known or ()), *values)
        lost = not complete or inner.whole_unreadable or inner.groups or UNREADABLE in inner.values.values()
        known_instances = reading.groups.get(link_id)
        if lost or known_instances is UNREADABLE:
            reading.groups[link_id] = UNREADABLE
        else:
            reading.groups.setdefault(link_id, []).append({k: v for k, v in inner.values.items() if v})
        return True


def _interval(when: Any) -> tuple[datetime | None, datetime | None]:
    """The earliest and latest UTC instants a FHIR date/dateTime may mean; (None, None) when it cannot be read.

    An instant with its offset is one point; a date (``2024-01-02``, ``2024-03``) or a time without
    an offset spans every offset from -12:00 to +14:00, so it is not ordered against what falls inside.
    """
    try:
        moment = parse_datetime(when)
        if moment is not None:
            point = moment.astimezone(UTC)
            return point, point
        if isinstance(when, str) and "T" in when:
            naive = datetime.fromisoformat(when.strip()).replace(tzinfo=UTC)
            return naive - _EARLIEST_OFFSET, naive + _LATEST_OFFSET
        bounds = date_bounds(when)
        if bounds is None:
            return None, None
        first = datetime(bounds[0].year, bounds[0].month, bounds[0].day, tzinfo=UTC)
        last = datetime(bounds[1].year, bounds[1].month, bounds[1].day, tzinfo=UTC) + timedelta(days=1)
        return first - _EARLIEST_OFFSET, last + _LATEST_OFFSET
    except (ValueError, OverflowError):
        return None, None


def _speaking(candidates: list[_Reading]) -> list[_Reading]:
    """The responses that speak last for an item: the latest, and every one that cannot be ordered before it."""
    dated = [r for r in candidates if r.earliest is not None and r.latest is not None]
    if not dated:
        return candidates
    newest = max(dated, key=lambda r: r.latest)  # type: ignore[arg-type, return-value]
    return [r for r in candidates if r.earliest is None or r.latest >= newest.earliest]  # type: ignore[operator]


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
        readings = [reader.read(qr) for qr in responses] + [reader.read(qr, whole=False) for qr in unreadable]
        self._answers: dict[str, list[Answer]] = {}
        self._groups: dict[str, list[GroupAnswer]] = {}
        self._unreadable: dict[str, str] = {}  # linkId -> the response whose answer to it could not be read
        blankets = [r for r in readings if r.whole_unreadable]
        self._blanket = blankets[0].source if blankets else None
        mentioning: dict[str, list[_Reading]] = {}
        for reading in readings:
            for link_id in {*reading.values, *reading.groups}:
                mentioning.setdefault(link_id, []).append(reading)
        for link_id, found in mentioning.items():
            self._settle(link_id, found + [r for r in blankets if r not in found])

    def _settle(self, link_id: str, candidates: list[_Reading]) -> None:
        """Decide what the responses that speak last say of ``link_id``; disagreement is unreadable."""
        as_group = any(link_id in r.groups for r in candidates)
        if as_group and any(link_id in r.values for r in candidates):
            self._unreadable[link_id] = candidates[0].source  # a group in one place, a question in another
            return
        table = "groups" if as_group else "values"
        speaking = _speaking(candidates)
        said = [r.says(table, link_id) for r in speaking]
        if any(s is UNREADABLE for s in said) or any(s != said[0] for s in said):
            lost = [r.source for r, s in zip(speaking, said, strict=True) if s is UNREADABLE]
            self._unreadable[link_id] = lost[0] if lost else speaking[0].source
            return
        ref = f"{speaking[0].source}#{link_id}"
        if table == "values":
            self._answers[link_id] = [Answer(link_id, v, ref) for v in said[0]]
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
