"""What the record reader makes of one resource: an Entry, a Deferred entry, or an Unread.

An :class:`Entry` is a resource that counts, reduced to what rules read. A
:class:`Deferred` is one whose codes are read (so the record can index it and
tell what it bears on) but whose dates, values and other fields are read only
when a criterion first asks for it. An :class:`Unread` is a resource the reader
could not understand, kept so that it is never taken for silence. The date
helpers here turn FHIR date elements into the (latest, earliest) bounds entries
carry (product-decisions.md §5).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from fhir_mappings.codes import Code, arr, obj
from fhir_mappings.dates import date_bounds

if TYPE_CHECKING:
    from fhir_mappings.observations import Quantity
    from fhir_mappings.record import PatientRecord


@dataclass(slots=True)
class Entry:
    """One countable resource of the record, reduced to what rules read.

    ``start`` is the latest day a reduced-precision date may mean and ``start_lo`` the earliest
    (product-decisions.md §5: each comparison takes the bound least favourable to approval;
    for most windows that is the later one). ``active_now`` is a Condition or allergy whose
    clinical status is active (or absent and not abated), or a medication still in force.
    ``suspected`` marks a provisional, differential or unconfirmed diagnosis; ``absent`` an
    Observation whose value says the finding is absent or negative.
    """

    ref: str
    type: str
    codes: frozenset[Code]
    start: date | None
    end: date | None = None
    value_codes: frozenset[Code] = frozenset()
    quantity: Quantity | None = None
    body_site: frozenset[Code] = frozenset()
    reason_codes: frozenset[Code] = frozenset()
    reason_refs: tuple[str, ...] = ()
    text: str = ""
    active_now: bool = False
    route_codes: frozenset[Code] = frozenset()  # medications: how it was (to be) given
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    start_lo: date | None = None
    suspected: bool = False
    absent: bool = False
    status: str | None = None


@dataclass(frozen=True, slots=True)
class Unread:
    """A resource the reader could not understand, and why (product-decisions.md §1).

    ``codes`` are its understood codes when only its value or status could not be read:
    then it bears only on criteria whose codes it matches. With no codes it could be
    anything of its type and bears on every criterion that reads the type.
    """

    ref: str
    type: str
    why: str
    codes: frozenset[Code] = frozenset()
    day: date | None = None

    def describe(self) -> str:
        """The explanation a reader sees: ``MedicationRequest/mr-7: RxNorm 855332 not classified``."""
        return f"{self.ref}: {self.why}"


@dataclass(slots=True)
class Deferred:
    """A counted resource whose codes are read and whose :class:`Entry` is built on first use.

    ``codes`` and ``value_codes`` are exactly the ones the entry will carry (``finish`` builds
    it from them), so the record indexes it by code without reading the rest; ``detail`` is
    what the first reading found that the entry needs (an Observation's value).
    """

    ref: str
    type: str
    raw: Mapping[str, Any]
    codes: frozenset[Code]
    value_codes: frozenset[Code]
    finish: Callable[[PatientRecord, Deferred], Entry]
    detail: Any = None
    entry: Entry | None = None

    def built(self, record: PatientRecord) -> Entry:
        """The entry, built the first time it is asked for."""
        if self.entry is None:
            self.entry = self.finish(record, self)
        return self.entry


def unread_concept(ref: str, rtype: str, unknown: list[str], day: date | None) -> Unread:
    """An Unread for a resource none of whose codings the terminology knows."""
    shown = ", ".join(unknown) if unknown else "no coded value"
    return Unread(ref, rtype, f"{shown} not classified", day=day)


_SYSTEM_NAMES = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://loinc.org": "LOINC",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://www.ama-assn.org/go/cpt": "CPT",
}


def describe_code(code: Code) -> str:
    """A code as a reader names it: ``RxNorm 855332``, or the system URI for a local one."""
    return f"{_SYSTEM_NAMES.get(code[0], code[0] or 'no system')} {code[1]}"


_NO_DATES: tuple[None, None] = (None, None)


def entry_dates(value: Any) -> tuple[date | None, date | None]:
    """(latest, earliest) day of a date value; both None when it does not parse."""
    if value is None:  # the usual absent element, without asking the parser
        return _NO_DATES
    bounds = date_bounds(value)
    return (bounds[1], bounds[0]) if bounds else (None, None)


def first_bounds(*values: Any) -> tuple[date | None, date | None]:
    """``entry_dates`` of the first value that parses."""
    for value in values:
        if value is not None:
            bounds = date_bounds(value)
            if bounds:
                return bounds[1], bounds[0]
    return None, None


def first_date(*values: Any) -> date | None:
    return first_bounds(*values)[0]


def period(value: Any) -> tuple[tuple[date | None, date | None], date | None]:
    """((latest start, earliest start), latest end) of a FHIR Period."""
    if value is None:
        return _NO_DATES, None
    span = obj(value)
    return entry_dates(span.get("start")), entry_dates(span.get("end"))[0]


def references(items: Any) -> tuple[str, ...]:
    refs = []
    for item in arr(items):
        if (type(item) is dict or isinstance(item, Mapping)) and isinstance(item.get("reference"), str):
            refs.append(item["reference"])
    return tuple(refs)
