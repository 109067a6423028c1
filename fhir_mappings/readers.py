"""One reader per resource type: what each type of resource says, as an Entry, Deferred or Unread.

Each reader takes the record (for the terminology and references), the
resource's reference and its JSON, after the status rules (``status.py``) have
let it through. Types the rules read in bulk (Conditions, Procedures,
Observations, medications, Encounters) are read in two steps: their codes
first, so the record can index them and tell what they bear on, the rest when a
criterion first asks for the entry (``entries.Deferred``). The readers of
Conditions and allergies, Observations and medications live in their own
modules; this one holds the rest and the table :data:`READERS`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fhir_mappings.codes import Code, arr, coding_key, concept_codes, concept_text, obj
from fhir_mappings.conditions import allergy, condition
from fhir_mappings.entries import (
    Deferred,
    Entry,
    Unread,
    first_bounds,
    first_date,
    period,
    references,
    unread_concept,
)
from fhir_mappings.medications import MEDICATION_TYPES, medication
from fhir_mappings.observations import observation

if TYPE_CHECKING:
    from fhir_mappings.record import PatientRecord

Reader = Callable[["PatientRecord", str, Mapping[str, Any]], "Entry | Deferred | Unread | None"]


def _procedure_dates(r: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(latest start, earliest start, end) from performed[x]."""
    (p_start, p_start_lo), end = period(r.get("performedPeriod"))
    start, start_lo = first_bounds(r.get("performedDateTime"), r.get("performedString"))
    return (start, start_lo, end) if start else (p_start, p_start_lo, end)


def procedure(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Deferred | Unread:
    """A Procedure, by its classified codes; not understood when none of its codings is known."""
    codes, unknown = rec.read_concept(r.get("code"))
    if not codes:
        return unread_concept(ref, "Procedure", unknown, _procedure_dates(r)[0])
    if r.get("reasonReference") is not None and not isinstance(r.get("reasonReference"), list):
        # Its reason ties it to an episode or region: unreadable, it is not "no reason" (which counts anywhere).
        return Unread(ref, "Procedure", "reasonReference not readable", codes, _procedure_dates(r)[0])
    return Deferred(ref, "Procedure", r, codes, frozenset(), _procedure_entry)


def _procedure_entry(rec: PatientRecord, item: Deferred) -> Entry:
    r = item.raw
    start, start_lo, end = _procedure_dates(r)
    return Entry(
        item.ref,
        "Procedure",
        item.codes,
        start,
        end=end,
        body_site=rec.classes(r.get("bodySite")),
        reason_codes=rec.classes(r.get("reasonCode")),
        reason_refs=references(r.get("reasonReference")),
        text=concept_text(r.get("code")),
        raw=r,
        start_lo=start_lo,
    )


def device(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry | Unread:
    """A Device by its type and ``safety`` codes (an implant counts while it may be in the body)."""
    codes, unknown = rec.read_concept(r.get("type"))
    safety, _ = rec.read_concept(r.get("safety"))
    if not codes and not safety:
        names = [obj(n).get("name") for n in arr(r.get("deviceName"))]
        return Unread(
            ref,
            "Device",
            f"device type {', '.join(unknown) or 'not coded'} not classified"
            + (f" ({'; '.join(str(n) for n in names if n)})" if any(names) else ""),
        )
    return Entry(
        ref,
        "Device",
        codes | safety,
        first_date(r.get("manufactureDate")),
        text=concept_text(r.get("type")),
        raw=r,
        active_now=True,
    )


def report(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry | Unread:
    """A DiagnosticReport by its code, with its ``conclusionCode`` as its value."""
    (p_start, p_lo), _ = period(r.get("effectivePeriod"))
    start, start_lo = first_bounds(r.get("effectiveDateTime"))
    if start is None:
        start, start_lo = (p_start, p_lo) if p_start else first_bounds(r.get("issued"))
    codes, unknown = rec.read_concept(r.get("code"))
    if not codes:
        return unread_concept(ref, "DiagnosticReport", unknown, start)
    return Entry(
        ref,
        "DiagnosticReport",
        codes,
        start,
        value_codes=rec.classes(r.get("conclusionCode")),
        text=str(r.get("conclusion") or ""),
        raw=r,
        start_lo=start_lo,
    )


def imaging(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    """An ImagingStudy by its modalities and procedure codes, with its series' body sites."""
    codes: set[Code] = set()
    for modality in arr(r.get("modality")):
        key = coding_key(modality)
        if key:
            codes.add(key)
    codes |= rec.classes(r.get("procedureCode"))
    body: set[Code] = set()
    for series in arr(r.get("series")):
        key = coding_key(obj(obj(series).get("modality")))
        if key:
            codes.add(key)
        body |= rec.classes({"coding": [obj(obj(series).get("bodySite"))]})
    start, start_lo = first_bounds(r.get("started"))
    return Entry(ref, "ImagingStudy", frozenset(codes), start, body_site=frozenset(body), raw=r, start_lo=start_lo)


def encounter(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Deferred:
    """An Encounter. Its type is often a local code: that only means it adds no evidence, not that it hides any."""
    kinds, services = rec.classes(r.get("type")), rec.classes(r.get("serviceType"))
    # The terminology's own set when there is one part (no copy): entries sharing a set are indexed once.
    codes = kinds | services if services else kinds
    return Deferred(ref, "Encounter", r, codes, _one_code(coding_key(obj(r.get("class")))), _encounter_entry)


@functools.lru_cache(maxsize=1024)
def _one_code(code: Code | None) -> frozenset[Code]:
    """``{code}`` (empty for None), one set per code: an Encounter's class, shared by every Encounter of it."""
    return frozenset({code} if code else ())


def _encounter_entry(rec: PatientRecord, item: Deferred) -> Entry:
    r = item.raw
    (start, start_lo), end = period(r.get("period"))
    return Entry(
        item.ref,
        "Encounter",
        item.codes,
        start,
        end=end,
        value_codes=item.value_codes,
        reason_codes=rec.classes(r.get("reasonCode")),
        raw=r,
        start_lo=start_lo,
    )


def coverage(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    """A Coverage by its type and period."""
    (start, start_lo), end = period(r.get("period"))
    return Entry(ref, "Coverage", frozenset(concept_codes(r.get("type"))), start, end=end, raw=r, start_lo=start_lo)


READERS: dict[str, Reader] = {
    "Condition": condition,
    "Procedure": procedure,
    "Observation": observation,
    "AllergyIntolerance": allergy,
    "Device": device,
    "DiagnosticReport": report,
    "ImagingStudy": imaging,
    "Encounter": encounter,
    "Coverage": coverage,
    **dict.fromkeys(MEDICATION_TYPES, medication),
}
