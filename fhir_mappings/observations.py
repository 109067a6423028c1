"""Reading an Observation's value in every shape EHRs send it.

A finding's value decides what it says (product-decisions.md §1: "findings have
values"): "Hoffmann sign: absent", ``valueBoolean: false`` or an interpretation
of negative are evidence *against* the finding. A value the reader cannot read
is reported as such, so the record reader keeps the Observation as not
understood rather than as silence.

The answer codes below are FHIR, LOINC answer-list and SNOMED CT codes for
"present / absent", "positive / negative", "detected / not detected" and
"yes / no": they say how a value is written, not what any guideline requires,
so they live with the reader rather than in a CarePath.

:func:`observation` reads the resource itself: its codes and its value first
(what the record indexes it by, and whether it can be read at all), its dates
and body site when a criterion first asks for it. Each component of a panel
becomes an entry of its own; a component the reader cannot classify is not
understood (it may be the very result a criterion reads), never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Any, NamedTuple

from fhir_mappings.codes import Code, arr, coding_key, concept_codes, concept_text, obj
from fhir_mappings.entries import Deferred, Entry, Unread, first_bounds, period, unread_concept
from fhir_mappings.systems import LOINC, SNOMED

if TYPE_CHECKING:
    from fhir_mappings.record import PatientRecord

_V2_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_V2_0136 = "http://terminology.hl7.org/CodeSystem/v2-0136"

ABSENT_CODES: frozenset[Code] = frozenset(
    {
        (SNOMED, "2667000"),  # Absent
        (SNOMED, "373067005"),  # No
        (SNOMED, "260385009"),  # Negative
        (SNOMED, "260415000"),  # Not detected
        (SNOMED, "272519000"),  # Absence of
        (LOINC, "LA32-8"),  # No
        (LOINC, "LA6577-6"),  # Negative
        (LOINC, "LA11883-8"),  # Not detected
        (LOINC, "LA9634-2"),  # Absent
        (_V2_INTERPRETATION, "NEG"),
        (_V2_INTERPRETATION, "ND"),
        (_V2_0136, "N"),
    }
)
PRESENT_CODES: frozenset[Code] = frozenset(
    {
        (SNOMED, "52101004"),  # Present
        (SNOMED, "373066001"),  # Yes
        (SNOMED, "10828004"),  # Positive
        (SNOMED, "260373001"),  # Detected
        (LOINC, "LA33-6"),  # Yes
        (LOINC, "LA6576-8"),  # Positive
        (LOINC, "LA11882-0"),  # Detected
        (LOINC, "LA9633-4"),  # Present
        (_V2_INTERPRETATION, "POS"),
        (_V2_INTERPRETATION, "DET"),
        (_V2_0136, "Y"),
    }
)
_ABSENT_WORDS = re.compile(
    r"^\s*(absent|negative|neg|no|none|not present|not detected|non[- ]?reactive|denies|normal|nl|-)\s*[.!]?\s*$", re.I
)
_PRESENT_WORDS = re.compile(r"^\s*(present|positive|pos|yes|detected|reactive|\+)\s*[.!]?\s*$", re.I)
_NUMBER = re.compile(r"^\s*([<>]=?)?\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*([A-Za-z%/*0-9^{}.µu]*)\s*$")


_NO_CODES: frozenset[Code] = frozenset()


class Quantity(NamedTuple):
    """A numeric value with the unit code (UCUM when given) or unit text (immutable; a tuple: cheap to make)."""

    value: float
    unit: str


class Value(NamedTuple):
    """What an Observation's value says: codes, a number, absent, or why it cannot be read."""

    codes: frozenset[Code] = frozenset()
    quantity: Quantity | None = None
    absent: bool = False
    unreadable: str = ""


def read_value(resource: Mapping[str, Any], record: PatientRecord) -> Value:
    """Read ``value[x]`` (and, when there is no value, the interpretation) of an Observation or component."""
    plain = "valueQuantity" in resource and "valueBoolean" not in resource and "valueCodeableConcept" not in resource
    if plain and "interpretation" not in resource:
        return _plain_quantity(resource["valueQuantity"])  # the usual result, read directly
    interpretation = concept_codes(resource.get("interpretation"))
    present_flag = bool(interpretation & PRESENT_CODES)
    absent_flag = bool(interpretation & ABSENT_CODES) and not present_flag
    if "valueBoolean" in resource:
        flag = resource["valueBoolean"]
        if not isinstance(flag, bool):
            return Value(unreadable="valueBoolean is not true or false")
        return Value(codes=frozenset() if not flag else PRESENT_CODES, absent=not flag)
    if "valueCodeableConcept" in resource:
        return _coded(resource["valueCodeableConcept"], record, absent_flag)
    for key in ("valueQuantity", "valueInteger", "valueDecimal", "valueString"):
        if key in resource:
            return _numeric(key, resource[key], interpretation)
    if any(k.startswith("value") for k in resource):
        shape = next(k for k in resource if k.startswith("value"))
        return Value(unreadable=f"a {shape} cannot be read")
    if resource.get("dataAbsentReason") is not None:
        return Value(absent=True, unreadable="no result (dataAbsentReason)")
    # No value: the code itself states the finding ("Hyperreflexia"), unless interpreted as negative.
    return Value(codes=frozenset(interpretation) | (PRESENT_CODES if present_flag else frozenset()), absent=absent_flag)


_new = tuple.__new__  # a NamedTuple made from its fields in order, without its Python-level __new__


def _plain_quantity(raw: Any) -> Value:
    """``_numeric("valueQuantity", raw, no interpretation)``: the usual number and unit read at once, any
    other shape by ``_numeric``."""
    if type(raw) is dict:
        value = raw.get("value")
        if (type(value) is float or type(value) is int) and raw.get("comparator") is None:
            unit = raw.get("code") or raw.get("unit") or ""
            return _new(Value, (_NO_CODES, _new(Quantity, (float(value), str(unit))), False, ""))
    return _numeric("valueQuantity", raw, set())


def _coded(concept: Any, record: PatientRecord, absent_flag: bool) -> Value:
    raw = concept_codes(concept)
    if raw & PRESENT_CODES:
        return Value(codes=frozenset(raw) | PRESENT_CODES)
    if raw & ABSENT_CODES:
        return Value(codes=frozenset(raw), absent=True)
    known, unknown = record.read_concept(concept)
    number = _first_number(concept)
    if known or number is not None:
        quantity = Quantity(number, "") if number is not None else None
        return Value(codes=known, quantity=quantity, absent=absent_flag)
    text = str(obj(concept).get("text") or "")
    if _ABSENT_WORDS.match(text):
        return Value(absent=True)
    if _PRESENT_WORDS.match(text):
        return Value(codes=frozenset(raw) | PRESENT_CODES)
    return Value(unreadable=f"coded value {', '.join(unknown) or repr(text[:40])} not understood")


def _first_number(concept: Any) -> float | None:
    """A numeric answer written as a code or display ("7", "7 - severe pain"), as pain scales often are."""
    for coding in arr(obj(concept).get("coding")):
        for key in ("code", "display"):
            match = re.match(r"^\s*(\d+(?:\.\d+)?)\b", str(obj(coding).get(key) or ""))
            if match and coding_key(coding):
                return float(match.group(1))
    return None


def _numeric(key: str, raw: Any, interpretation: set[Code]) -> Value:
    flags = frozenset(interpretation) if interpretation else _NO_CODES
    if key == "valueQuantity":
        quantity = obj(raw)
        value = quantity.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return Value(unreadable="valueQuantity has no number")
        if quantity.get("comparator") is not None:
            return Value(unreadable=f"valueQuantity is a bound ({quantity.get('comparator')}), not a value")
        unit = quantity.get("code") or quantity.get("unit") or ""
        return Value(codes=flags, quantity=Quantity(float(value), str(unit)))
    if key in ("valueInteger", "valueDecimal"):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return Value(unreadable=f"{key} is not a number")
        return Value(codes=flags, quantity=Quantity(float(raw), ""))
    text = raw if isinstance(raw, str) else ""
    if _ABSENT_WORDS.match(text):
        return Value(codes=flags, absent=True)
    if _PRESENT_WORDS.match(text):
        return Value(codes=flags | PRESENT_CODES)
    match = _NUMBER.match(text)
    if match and not match.group(1):
        return Value(codes=flags, quantity=Quantity(float(match.group(2)), match.group(3) or ""))
    return Value(unreadable=f"valueString {text[:40]!r} not understood")


def observation(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Deferred | Unread | None:
    """An Observation by its codes and value; its components go to the record (``rec.add_part``) as entries.

    None for a panel under a local code whose components were read: it is read through them.
    """
    codes, unknown = rec.read_concept(r.get("code"))
    understood_parts = 0
    for component in arr(r.get("component")) if "component" in r else ():
        part = _component(rec, ref, obj(component), r)
        rec.add_part(part)
        understood_parts += not isinstance(part, Unread)
    if not codes:
        # A panel under a local code is read through its components; anything else is not understood.
        return None if understood_parts else unread_concept(ref, "Observation", unknown, _dates(r)[0])
    value = read_value(r, rec)
    if value.unreadable:
        return Unread(ref, "Observation", value.unreadable, codes | value.codes, _dates(r)[0])
    return Deferred(ref, "Observation", r, codes, value.codes, _observation_entry, (value, False))


def _dates(r: Mapping[str, Any]) -> tuple[date | None, date | None]:
    """(latest, earliest) effective day: effective[x], else ``issued``."""
    start, start_lo = first_bounds(r.get("effectiveDateTime"), r.get("effectiveInstant"))
    if start is None:
        (p_start, p_lo), _ = period(r.get("effectivePeriod"))
        start, start_lo = (p_start, p_lo) if p_start else first_bounds(r.get("issued"))
    return start, start_lo


def _observation_entry(rec: PatientRecord, item: Deferred) -> Entry:
    """The entry of an Observation, or of one of its components (``detail``: its value, and whether a part)."""
    r, (value, part) = item.raw, item.detail
    start, start_lo = _dates(r)
    return Entry(
        item.ref,
        "Observation",
        item.codes,
        start,
        value_codes=item.value_codes,
        quantity=value.quantity,
        body_site=frozenset() if part else rec.classes(r.get("bodySite")),
        text="" if part else concept_text(r.get("code")),
        raw=r,
        start_lo=start_lo,
        absent=value.absent,
    )


def _component(
    rec: PatientRecord, ref: str, component: Mapping[str, Any], parent: Mapping[str, Any]
) -> Deferred | Unread:
    codes, unknown = rec.read_concept(component.get("code"))
    if not codes:
        # A panel's unknown component (a local "PLT" row) may be the very result a criterion reads.
        shown = [f"component {c}" for c in unknown] or ["a component"]
        return unread_concept(ref, "Observation", shown, _dates(parent)[0])
    value = read_value(component, rec)
    if value.unreadable:
        return Unread(ref, "Observation", f"component {value.unreadable}", codes | value.codes, _dates(parent)[0])
    return Deferred(ref, "Observation", parent, codes, value.codes, _observation_entry, (value, True))
