"""Reading medication resources: what was given (classified to ingredients and classes), when, and how.

MedicationRequest, MedicationStatement, MedicationDispense and
MedicationAdministration share one reader. Their codes come first (the record
indexes them without reading anything else): product codes (SCD, SBD, packs,
NDC) become their ingredients and classes through the terminology, a
``medicationReference`` is followed to a contained or recorded Medication, and
ingredient names in the text are the last resort; a medication still
unclassified is not understood (product-decisions.md §1). Dates, the supply's
end, routes and reasons are read when a criterion first asks for the entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from fhir_mappings.codes import Code, arr, concept_codes, concept_text, obj
from fhir_mappings.entries import Deferred, Entry, Unread, first_bounds, period
from fhir_mappings.references import contained

if TYPE_CHECKING:
    from fhir_mappings.record import PatientRecord

MEDICATION_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationDispense", "MedicationAdministration")
_ACTIVE_MEDICATION = frozenset({"active", "on-hold", "in-progress", "intended"})


def medication_codes(rec: PatientRecord, r: Mapping[str, Any]) -> tuple[frozenset[Code], str | None]:
    """Return a medication resource's classified codes, or why it could not be classified.

    Follows ``medicationReference`` to a contained Medication or one anywhere in the
    record; product codes (SCD, SBD, packs, NDC) become their ingredients and classes
    through the terminology; when no code is known, the ingredient names in the text or
    displays are the fallback. A medication that is still unclassified is not understood.
    """
    concepts: list[Any] = [r.get("medicationCodeableConcept")]
    ref = obj(r.get("medicationReference")).get("reference")
    if isinstance(ref, str):
        med = contained(r, ref) or (None if ref.startswith("#") else rec.resolve(ref))
        if med is None:
            return frozenset(), f"medicationReference {ref} could not be resolved"
        concepts.append(med.get("code"))
        concepts.extend(obj(i).get("itemCodeableConcept") for i in arr(med.get("ingredient")))
    elif r.get("medicationCodeableConcept") is None:
        return frozenset(), "no medication given"
    codes: set[Code] = set()
    unknown: list[str] = []
    if len(concepts) == 1:  # a code of its own: the terminology's set as is (shared, so indexed once)
        found, unknown = rec.read_concept(concepts[0])
        if found:
            return found, None
    for concept in concepts if len(concepts) > 1 else ():
        found, missing = rec.read_concept(concept)
        codes |= found
        unknown += missing
    if codes:
        return frozenset(codes), None
    named = rec.terminology.classify_text(" ; ".join(concept_text(c) for c in concepts))
    if named:
        return frozenset(named), None
    shown = ", ".join(unknown) or "no code"
    return frozenset(), f"{shown} not classified"


def medication(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Deferred | Unread:
    """A medication exposure, by its classified codes; the rest of the entry is read on first use."""
    rtype = str(r.get("resourceType"))
    codes, why = medication_codes(rec, r)
    if why is not None:
        return Unread(ref, rtype, why, day=_dates(r)[0])
    return Deferred(ref, rtype, r, codes, frozenset(), _medication_entry)


def _dates(r: Mapping[str, Any]) -> tuple[date | None, date | None, date | None]:
    """(latest start, earliest start, end) of a medication resource, the end from its supply when not given."""
    (eff_start, eff_lo), eff_end = period(r.get("effectivePeriod"))
    start, start_lo = first_bounds(
        r.get("effectiveDateTime"), r.get("authoredOn"), r.get("whenHandedOver"), r.get("dateAsserted")
    )
    validity = obj(r.get("dispenseRequest")).get("validityPeriod")
    if validity is not None and (eff_end is None or (start is None and eff_start is None)):
        (v_start, v_lo), v_end = period(validity)
    else:
        (v_start, v_lo), v_end = (None, None), None  # not needed: the effective period and dates decide
    if start is None:
        start, start_lo = (eff_start, eff_lo) if eff_start else (v_start, v_lo)
    end = eff_end or v_end
    if end is None and start is not None:
        end = _supply_end(r, start)
    return start, start_lo, end


def _medication_entry(rec: PatientRecord, item: Deferred) -> Entry:
    """A medication exposure: its start, its end when the data gives one, and whether it is still in force."""
    r = item.raw
    start, start_lo, end = _dates(r)
    return Entry(
        item.ref,
        item.type,
        item.codes,
        start,
        end=end,
        active_now=r.get("status") in _ACTIVE_MEDICATION,
        reason_codes=rec.classes(r.get("reasonCode")),
        route_codes=_route_codes(r),
        text=" ".join(concept_text(c) for c in (r.get("medicationCodeableConcept"),) if c),
        raw=r,
        start_lo=start_lo,
        status=r.get("status") if isinstance(r.get("status"), str) else None,
    )


def _supply_end(r: Mapping[str, Any], start: date) -> date | None:
    """The last day a dispense or request supplies, from daysSupply or expectedSupplyDuration and refills."""
    supply = obj(r.get("daysSupply")).get("value")
    request = obj(r.get("dispenseRequest"))
    duration = obj(request.get("expectedSupplyDuration"))
    fills = 1
    if supply is None and duration:
        unit = str(duration.get("code") or duration.get("unit") or "d").lower()
        per_day = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": 30, "month": 30}.get(unit)
        value = duration.get("value")
        if per_day and isinstance(value, (int, float)) and not isinstance(value, bool):
            supply = value * per_day
        repeats = request.get("numberOfRepeatsAllowed")
        fills += repeats if isinstance(repeats, int) and not isinstance(repeats, bool) and repeats > 0 else 0
    if isinstance(supply, (int, float)) and not isinstance(supply, bool) and 0 <= supply < 100_000:
        return start + timedelta(days=int(supply) * fills)
    return None


def _route_codes(r: Mapping[str, Any]) -> frozenset[Code]:
    """Routes from every dosage structure of a medication resource (R4 names them differently)."""
    dosages = [*arr(r.get("dosageInstruction")), *arr(r.get("dosage")), obj(r.get("dosage"))]
    # Raw codes: a route the terminology does not know is still not "by mouth".
    return frozenset(code for d in dosages for code in concept_codes(obj(d).get("route")))
