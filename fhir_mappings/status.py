"""Which statuses let a resource count as evidence, and which leave it pending or not understood.

The status rules of clinical-coding.md §0.3 and product-decisions.md §1, in one
place: a resource's ``status`` (or, for Conditions and allergies, its clinical
and verification statuses) says whether it is evidence, a result not yet
final, never evidence, or something the reader does not understand. Nothing
here reads codes or dates; the record reader asks this module first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhir_mappings.codes import arr


# How each status of a resource type reads (clinical-coding.md §0.3, product-decisions.md §1):
# ``counts``: the resource is evidence; ``pending``: a result not yet final, unknown rather than absent
# (it bears on the criteria its codes match); ``ignored``: never evidence (cancelled, planned, in error).
# A status in none of these sets, or a missing one, is not understood: the resource bears on every
# criterion that reads its type (fail closed). ``None`` in ``counts`` means the element is optional.
@dataclass(frozen=True, slots=True)
class StatusRule:
    """Which values of a resource type's status element count, are pending or are ignored."""

    counts: frozenset[str | None]
    pending: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()


_STATUS_RULES: dict[str, StatusRule] = {
    "Procedure": StatusRule(
        frozenset({"completed"}),
        ignored=frozenset({"preparation", "in-progress", "not-done", "on-hold", "stopped", "entered-in-error"}),
    ),
    "Observation": StatusRule(
        frozenset({"final", "amended", "corrected"}),
        pending=frozenset({"preliminary", "registered"}),
        ignored=frozenset({"cancelled", "entered-in-error"}),
    ),
    "DiagnosticReport": StatusRule(
        frozenset({"final", "amended", "corrected", "appended"}),
        pending=frozenset({"preliminary", "registered", "partial"}),
        ignored=frozenset({"cancelled", "entered-in-error"}),
    ),
    "ImagingStudy": StatusRule(
        frozenset({"available"}), ignored=frozenset({"registered", "cancelled", "entered-in-error"})
    ),
    # Exposure windows count every request that was, or still is, in force: on-hold and stopped included
    # (a blood thinner held for the procedure is still this patient's blood thinner).
    "MedicationRequest": StatusRule(
        frozenset({"active", "on-hold", "stopped", "completed"}),
        ignored=frozenset({"cancelled", "draft", "entered-in-error"}),
    ),
    "MedicationStatement": StatusRule(
        frozenset({"active", "completed", "intended", "stopped", "on-hold"}),
        ignored=frozenset({"entered-in-error", "not-taken"}),
    ),
    "MedicationDispense": StatusRule(
        frozenset({"completed", "in-progress"}),
        ignored=frozenset({"preparation", "cancelled", "on-hold", "entered-in-error", "stopped", "declined"}),
    ),
    "MedicationAdministration": StatusRule(
        frozenset({"completed", "in-progress", "on-hold", "stopped"}),
        ignored=frozenset({"not-done", "entered-in-error"}),
    ),
    "Encounter": StatusRule(
        frozenset({"finished", "in-progress", "arrived", "triaged", "onleave"}),
        ignored=frozenset({"planned", "cancelled", "entered-in-error"}),
    ),
    # An inactive implant may still be in the body (R4 has no "explanted" status): it counts.
    "Device": StatusRule(frozenset({"active", "inactive", None}), ignored=frozenset({"entered-in-error"})),
    "QuestionnaireResponse": StatusRule(
        frozenset({"completed", "amended"}), ignored=frozenset({"in-progress", "stopped", "entered-in-error"})
    ),
    "Coverage": StatusRule(frozenset({"active", "cancelled", "draft", None}), ignored=frozenset({"entered-in-error"})),
}
CLINICAL_ACTIVE = frozenset({"active", "recurrence", "relapse"})
CLINICAL_RESOLVED = frozenset({"inactive", "remission", "resolved"})
_VERIFICATION_PROVEN = frozenset({"confirmed", None})
_VERIFICATION_SUSPECTED = frozenset({"provisional", "differential", "unconfirmed", "presumed"})
_VERIFICATION_EXCLUDED = frozenset({"refuted", "entered-in-error"})


def status_code(concept: Any) -> str | None:
    """Return the first code of a status CodeableConcept (clinicalStatus etc.)."""
    if type(concept) is not dict and not isinstance(concept, Mapping):  # the type test first: ABC checks are slow
        return None
    for coding in arr(concept.get("coding")):
        if (type(coding) is dict or isinstance(coding, Mapping)) and isinstance(coding.get("code"), str):
            return coding["code"]
    return None


COUNTS, PENDING, IGNORED, UNKNOWN = "counts", "pending", "ignored", "unknown"


def status_reading(resource: Mapping[str, Any]) -> tuple[str, str]:
    """Classify a resource by its statuses: (COUNTS | PENDING | IGNORED | UNKNOWN, why).

    Conditions and allergies read clinicalStatus and verificationStatus (refuted and
    entered-in-error never count; a resolved one is still read, for look-back windows);
    the other types read ``status`` through :data:`_STATUS_RULES`.
    """
    rtype = resource.get("resourceType")
    status = resource.get("status")
    if status == "entered-in-error":
        return IGNORED, "entered in error"
    if rtype in ("Condition", "AllergyIntolerance"):
        return _clinical_reading(resource)
    if rtype == "MedicationRequest" and resource.get("doNotPerform") is True:
        return IGNORED, "do not perform"
    if type(status) is str:
        known = _READINGS.get((rtype, status)) if type(rtype) is str else None
        if known is not None:  # a listed status of a type with a rule: its reading, worked out at import
            return known
    rule = _STATUS_RULES.get(str(rtype))
    if rule is None:
        return COUNTS, ""
    value = status if isinstance(status, str) else None
    if value in rule.counts:
        return COUNTS, ""
    if value in rule.pending:
        return PENDING, f"status {value}: not a final result"
    if value in rule.ignored:
        return IGNORED, f"status {value}"
    return UNKNOWN, f"status {value!r} not understood" if value else "no status"


def _rule_reading(rule: StatusRule, value: str) -> tuple[str, str]:
    if value in rule.counts:
        return COUNTS, ""
    if value in rule.pending:
        return PENDING, f"status {value}: not a final result"
    return IGNORED, f"status {value}"


_READINGS: dict[tuple[str, str], tuple[str, str]] = {
    (rtype, value): _rule_reading(rule, value)
    for rtype, rule in _STATUS_RULES.items()
    for value in (*rule.counts, *rule.pending, *rule.ignored)
    if value is not None and rtype not in ("Condition", "AllergyIntolerance")
}


LISTED_READINGS: dict[tuple[str, str], tuple[str, str]] = {
    key: reading
    for key, reading in _READINGS.items()
    if key[1] != "entered-in-error"  # status_reading decides it first
}
"""``status_reading`` of a resource of this type with this listed status (Conditions and allergies are
not listed: their clinical statuses decide), except a MedicationRequest that says doNotPerform."""


def _clinical_reading(resource: Mapping[str, Any]) -> tuple[str, str]:
    verification = status_code(resource.get("verificationStatus"))
    clinical = status_code(resource.get("clinicalStatus"))
    if verification in _VERIFICATION_EXCLUDED:
        return IGNORED, f"verificationStatus {verification}"
    if verification not in _VERIFICATION_PROVEN and verification not in _VERIFICATION_SUSPECTED:
        return UNKNOWN, f"verificationStatus {verification!r} not understood"
    if clinical is not None and clinical not in CLINICAL_ACTIVE and clinical not in CLINICAL_RESOLVED:
        return UNKNOWN, f"clinicalStatus {clinical!r} not understood"
    return COUNTS, ""


def counts_as_evidence(resource: Mapping[str, Any]) -> bool:
    """Return True when a resource's statuses let it count (clinical-coding.md §0.3).

    A Condition or allergy must also be active (clinicalStatus active, recurrence or
    relapse, or none given); a resolved one is history, not a present finding.
    """
    reading, _ = status_reading(resource)
    if reading != COUNTS:
        return False
    if resource.get("resourceType") in ("Condition", "AllergyIntolerance"):
        clinical = status_code(resource.get("clinicalStatus"))
        return clinical is None or clinical in CLINICAL_ACTIVE
    return True


def suspected(resource: Mapping[str, Any]) -> bool:
    """A Condition or allergy whose verificationStatus says it is not proven (provisional, differential, ...)."""
    return status_code(resource.get("verificationStatus")) in _VERIFICATION_SUSPECTED
