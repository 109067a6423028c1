"""Reading Conditions and allergies: what the diagnosis is, when it began and whether it still holds.

A Condition is dated by its onset (``onsetDateTime``, ``onsetPeriod``,
``onsetString`` or ``onsetAge`` against the birth date; never its
``recordedDate``) and ended by its abatement; its clinical status says whether
it is active now, its verification status whether it is only suspected
(product-decisions.md §1, clinical-coding.md §0.3). An allergy that is
resolved is not evidence; one coded only in text is classified by the names in
it. Codes are read first; the rest of a Condition is read on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from fhir_mappings.codes import arr, concept_text, obj
from fhir_mappings.dates import date_bounds
from fhir_mappings.entries import Deferred, Entry, Unread, first_bounds, first_date, unread_concept
from fhir_mappings.status import CLINICAL_ACTIVE, CLINICAL_RESOLVED, status_code, suspected

if TYPE_CHECKING:
    from fhir_mappings.record import PatientRecord


def condition(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Deferred | Unread:
    """A Condition, by its classified codes; not understood when none of its codings is known."""
    codes, unknown = rec.read_concept(r.get("code"))
    if not codes:
        return unread_concept(ref, "Condition", unknown, _onset(rec, r)[0])
    return Deferred(ref, "Condition", r, codes, frozenset(), _condition_entry)


def _condition_entry(rec: PatientRecord, item: Deferred) -> Entry:
    """A Condition; its onset (never its recordedDate) dates it, and abatement ends it."""
    r = item.raw
    start, start_lo = _onset(rec, r)
    end = first_date(r.get("abatementDateTime"), obj(r.get("abatementPeriod")).get("end"))
    if end is None:
        end = _abatement_age(rec, r)
    clinical = status_code(r.get("clinicalStatus"))
    abated = any(k.startswith("abatement") for k in r)
    active = clinical in CLINICAL_ACTIVE if clinical is not None else not abated
    if clinical in CLINICAL_RESOLVED and end is None:
        # Resolved on an unknown day: it was last known active when it was recorded.
        end = first_date(r.get("recordedDate")) or start
    return Entry(
        item.ref,
        "Condition",
        item.codes,
        start,
        end=end,
        body_site=rec.classes(r.get("bodySite")),
        text=concept_text(r.get("code")),
        raw=r,
        start_lo=start_lo,
        active_now=active,
        suspected=suspected(r),
        status=clinical,
    )


def _onset(rec: PatientRecord, r: Mapping[str, Any]) -> tuple[date | None, date | None]:
    """(latest, earliest) onset from onsetDateTime, onsetPeriod, onsetAge or onsetString."""
    late, early = first_bounds(r.get("onsetDateTime"), obj(r.get("onsetPeriod")).get("start"), r.get("onsetString"))
    if late is not None:
        return late, early
    age = obj(r.get("onsetAge"))
    birth = date_bounds(obj(rec.patient).get("birthDate")) if rec.patient else None
    years = _age_years(age)
    if years is not None and birth is not None:
        # Age N lasts a whole year: onset lies between the Nth birthday and the day before the next.
        first = _add_years(birth[0], int(years))
        last = _add_years(birth[1], int(years) + 1) - timedelta(days=1)
        return last, first
    return None, None


def _abatement_age(rec: PatientRecord, r: Mapping[str, Any]) -> date | None:
    years = _age_years(obj(r.get("abatementAge")))
    birth = date_bounds(obj(rec.patient).get("birthDate")) if rec.patient else None
    if years is None or birth is None:
        return None
    return _add_years(birth[1], int(years) + 1) - timedelta(days=1)


def _age_years(age: Mapping[str, Any]) -> float | None:
    value = age.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    unit = str(age.get("code") or age.get("unit") or "a").lower()
    per_year = {"a": 1, "yr": 1, "year": 1, "years": 1, "mo": 12, "month": 12, "months": 12}.get(unit)
    return float(value) / per_year if per_year else None


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def allergy(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry | Unread | None:
    """An allergy or intolerance still in force (a resolved one is no longer evidence: None)."""
    clinical = status_code(r.get("clinicalStatus"))
    if clinical in CLINICAL_RESOLVED:
        return None  # no longer allergic
    codes, unknown = rec.read_concept(r.get("code"))
    for reaction in arr(r.get("reaction")):
        found, missing = rec.read_concept(obj(reaction).get("substance"))
        codes, unknown = codes | found, unknown + missing
    if not codes:
        named = rec.terminology.classify_text(concept_text(r.get("code")))
        if not named:
            return unread_concept(ref, "AllergyIntolerance", unknown, None)
        codes = frozenset(named)
    start, start_lo = first_bounds(r.get("onsetDateTime"), r.get("recordedDate"))
    return Entry(
        ref,
        "AllergyIntolerance",
        codes,
        start,
        text=concept_text(r.get("code")),
        raw=r,
        start_lo=start_lo,
        active_now=True,
        suspected=suspected(r),
    )
