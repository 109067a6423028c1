"""The patient's record as an index of countable entries.

History resources are read as plain JSON (full model validation of a 60-entry
prefetch costs 20-30 ms, see feasibility.md §1). Each resource that *counts*
(right status, not entered in error, not refuted) becomes one ``Entry`` with
its normalised codes and dates, so rules never touch raw JSON or statuses.
Status rules follow clinical-coding.md §0.3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from fhir_mappings.codes import Code, arr, coding_key, concept_codes, concept_text, obj
from fhir_mappings.dates import parse_date, period_bounds

# Which statuses make a resource count as evidence, per resource type.
# Values are (element, allowed codes); None in the allowed set means "absent is fine".
_STATUS_ALLOWED: dict[str, tuple[str, frozenset[str | None]]] = {
    "Procedure": ("status", frozenset({"completed"})),
    "Observation": ("status", frozenset({"final", "amended", "corrected"})),
    "DiagnosticReport": ("status", frozenset({"final", "amended", "corrected", "appended"})),
    "ImagingStudy": ("status", frozenset({"available"})),
    "MedicationRequest": ("status", frozenset({"active", "completed"})),
    "MedicationStatement": ("status", frozenset({"active", "completed", "intended"})),
    "MedicationDispense": ("status", frozenset({"completed"})),
    "MedicationAdministration": ("status", frozenset({"completed", "in-progress"})),
    "Encounter": ("status", frozenset({"finished", "in-progress", "arrived", "triaged", "onleave"})),
    "Device": ("status", frozenset({"active", None})),
    "QuestionnaireResponse": ("status", frozenset({"completed", "amended"})),
    "Coverage": ("status", frozenset({"active", "cancelled", "draft", None})),
}
_CLINICAL_ACTIVE = frozenset({"active", "recurrence", "relapse"})
_VERIFICATION_EXCLUDED = frozenset({"refuted", "entered-in-error"})
_MEDICATION_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationDispense", "MedicationAdministration")


@dataclass(frozen=True, slots=True)
class Quantity:
    """A numeric value with the unit code (UCUM when given) or unit text."""

    value: float
    unit: str


@dataclass(slots=True)
class Entry:
    """One countable resource of the record, reduced to what rules read."""

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


def _status_code(concept: Any) -> str | None:
    """Return the first code of a status CodeableConcept (clinicalStatus etc.)."""
    if not isinstance(concept, Mapping):
        return None
    for coding in arr(concept.get("coding")):
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
            return coding["code"]
    return None


def counts_as_evidence(resource: Mapping[str, Any]) -> bool:
    """Return True when a resource's status lets it count (clinical-coding.md §0.3)."""
    rtype = resource.get("resourceType")
    if resource.get("status") == "entered-in-error":
        return False
    if rtype in ("Condition", "AllergyIntolerance"):
        if _status_code(resource.get("verificationStatus")) in _VERIFICATION_EXCLUDED:
            return False
        clinical = _status_code(resource.get("clinicalStatus"))
        return clinical is None or clinical in _CLINICAL_ACTIVE
    if rtype == "MedicationRequest" and resource.get("doNotPerform") is True:
        return False
    rule = _STATUS_ALLOWED.get(str(rtype))
    if rule is None:
        return True
    element, allowed = rule
    status = resource.get(element)
    return (status if isinstance(status, str) else None) in allowed


def _first_date(*values: Any) -> date | None:
    for value in values:
        parsed = parse_date(value)
        if parsed:
            return parsed
    return None


def _quantity(resource: Mapping[str, Any]) -> Quantity | None:
    value_q = resource.get("valueQuantity")
    if isinstance(value_q, Mapping) and isinstance(value_q.get("value"), (int, float)):
        unit = value_q.get("code") or value_q.get("unit") or ""
        return Quantity(float(value_q["value"]), str(unit))
    for key in ("valueInteger", "valueDecimal"):
        raw = resource.get(key)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return Quantity(float(raw), "")
    return None


def _references(items: Any) -> tuple[str, ...]:
    refs = []
    for item in items or []:
        if isinstance(item, Mapping) and isinstance(item.get("reference"), str):
            refs.append(item["reference"])
    return tuple(refs)


class PatientRecord:
    """Everything known about one patient, indexed by resource type.

    Built once per request from the prefetch and fetched resources; entries
    that do not count (wrong status, refuted, entered in error) are dropped at
    build time so that no rule can use them by accident.
    """

    def __init__(self, resources: Iterable[Mapping[str, Any]], patient_id: str | None = None) -> None:
        self.patient_id = patient_id
        self.patient: Mapping[str, Any] | None = None
        self._by_type: dict[str, list[Entry]] = {}
        self._by_ref: dict[str, Mapping[str, Any]] = {}
        self.questionnaire_responses: list[Mapping[str, Any]] = []
        self.ignored: list[str] = []
        for resource in _flatten(resources):
            self._add(resource)
        for entries in self._by_type.values():
            entries.sort(key=lambda e: (e.start or date.min, e.ref))

    def _add(self, resource: Mapping[str, Any]) -> None:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            return
        ref = f"{rtype}/{resource.get('id') or '#' + str(len(self._by_ref))}"
        if ref in self._by_ref:
            return  # the same resource from prefetch and from a search: count it once
        self._by_ref[ref] = resource
        if rtype == "Patient":
            if patient_matches(resource, self.patient_id, own=True):
                self.patient = self.patient or resource
            return
        if not counts_as_evidence(resource) or not patient_matches(resource, self.patient_id):
            self.ignored.append(ref)
            return
        if rtype == "QuestionnaireResponse":
            self.questionnaire_responses.append(resource)
            return
        entry = self._entry(ref, rtype, resource)
        if entry is not None:
            self._by_type.setdefault(rtype, []).append(entry)

    def _entry(self, ref: str, rtype: str, r: Mapping[str, Any]) -> Entry | None:
        builder = _BUILDERS.get(rtype)
        return builder(self, ref, r) if builder else None

    def resolve(self, reference: str) -> Mapping[str, Any] | None:
        """Return the raw resource a literal reference ("Type/id") points to."""
        if reference in self._by_ref:
            return self._by_ref[reference]
        tail = "/".join(reference.rstrip("/").split("/")[-2:])
        return self._by_ref.get(tail)

    def entries(self, *types: str) -> list[Entry]:
        """Return counted entries of the given types, oldest first within each type."""
        out: list[Entry] = []
        for rtype in types:
            out.extend(self._by_type.get(rtype, ()))
        return out

    def has_any(self) -> bool:
        """Return True when the record holds anything beyond the Patient."""
        return bool(self._by_type) or bool(self.questionnaire_responses)

    def medication_codes(self, r: Mapping[str, Any]) -> set[Code]:
        """Return the codes of a medication resource, following medicationReference.

        Product-level Medication resources also contribute their ingredient
        codes, because EHRs send product codes while value sets list ingredients.
        """
        codes = concept_codes(r.get("medicationCodeableConcept"))
        ref = r.get("medicationReference")
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            med = _contained(r, ref["reference"]) or self.resolve(ref["reference"])
            if isinstance(med, Mapping):
                codes |= concept_codes(med.get("code"))
                for ingredient in arr(med.get("ingredient")):
                    if isinstance(ingredient, Mapping):
                        codes |= concept_codes(ingredient.get("itemCodeableConcept"))
        return codes


# Elements that say whose record a resource belongs to.
_PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")


def patient_matches(resource: Mapping[str, Any], patient_id: str | None, own: bool = False) -> bool:
    """Return False when a resource plainly belongs to another patient (it must never count as evidence).

    A resource that names no patient (e.g. a QuestionnaireResponse contained in
    the order) is accepted; one that names another patient is not.
    """
    if patient_id is None:
        return True
    if own:
        return resource.get("id") in (None, patient_id)
    for element in _PATIENT_ELEMENTS:
        ref = obj(resource.get(element)).get("reference")
        if isinstance(ref, str) and "Patient/" in ref:
            return literal_target(ref) == ("Patient", patient_id)
    return True


def literal_target(reference: str) -> tuple[str, str] | None:
    """Return ``(type, id)`` of a literal reference, or None when it is not one.

    Relative (``Patient/p1``), absolute (``https://ehr/fhir/Patient/p1``) and versioned
    (``.../Patient/p1/_history/2``) references name their last two segments (the version
    dropped); a contained (``#p1``), ``urn:`` or conditional (``Patient?identifier=...``)
    reference names no ``Type/id`` here.
    """
    if reference.startswith(("#", "urn:")) or "?" in reference:
        return None
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-2] or not parts[-1]:
        return None
    return parts[-2], parts[-1]


def foreign_patient_elements(order: Mapping[str, Any], patient_id: str) -> list[str]:
    """Return the elements of an order that name someone other than the patient ``patient_id``.

    Stricter than :func:`patient_matches`, which only keeps other patients' history out of
    the record: an order is decided *for* its patient, so a ``subject`` / ``patient`` naming
    anything but ``Patient/<patient_id>`` (another patient, or a Group, Location or Device,
    which the CRD order profiles do not allow) is listed, as is an Appointment participant
    whose actor is another Patient (``participant[1].actor``). An element that names no
    ``Type/id`` (absent, contained, ``urn:``, identifier only) is not listed: whether it may
    be absent is the FHIR model's question (``ServiceRequest.subject`` is required there).
    """
    found = []
    for element in ("subject", "patient"):
        ref = obj(order.get(element)).get("reference")
        target = literal_target(ref) if isinstance(ref, str) else None
        if target is not None and target != ("Patient", patient_id):
            found.append(element)
    for i, participant in enumerate(arr(order.get("participant"))):
        ref = obj(obj(participant).get("actor")).get("reference")
        target = literal_target(ref) if isinstance(ref, str) else None
        if target is not None and target[0] == "Patient" and target[1] != patient_id:
            found.append(f"participant[{i}].actor")
    return found


def _contained(resource: Mapping[str, Any], reference: str) -> Mapping[str, Any] | None:
    if not reference.startswith("#"):
        return None
    for item in arr(resource.get("contained")):
        if isinstance(item, Mapping) and item.get("id") == reference[1:]:
            return item
    return None


def _flatten(resources: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    """Yield resources, unpacking Bundles (searchset, collection, batch responses)."""
    for item in resources:
        if not isinstance(item, Mapping):
            continue
        if item.get("resourceType") == "Bundle":
            entries = item.get("entry") if isinstance(item.get("entry"), list) else []
            yield from _flatten(e.get("resource") for e in entries if isinstance(e, Mapping))
        else:
            yield item


def _condition(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    start = _first_date(r.get("onsetDateTime"), obj(r.get("onsetPeriod")).get("start"), r.get("recordedDate"))
    return Entry(
        ref,
        "Condition",
        frozenset(concept_codes(r.get("code"))),
        start,
        end=_first_date(r.get("abatementDateTime"), obj(r.get("abatementPeriod")).get("end")),
        body_site=frozenset(concept_codes(r.get("bodySite"))),
        text=concept_text(r.get("code")),
        raw=r,
    )


def _procedure(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    start, end = period_bounds(r.get("performedPeriod"))
    return Entry(
        ref,
        "Procedure",
        frozenset(concept_codes(r.get("code"))),
        _first_date(r.get("performedDateTime")) or start,
        end=end,
        body_site=frozenset(concept_codes(r.get("bodySite"))),
        reason_codes=frozenset(concept_codes(r.get("reasonCode"))),
        reason_refs=_references(r.get("reasonReference")),
        text=concept_text(r.get("code")),
        raw=r,
    )


def _observation(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    start, _ = period_bounds(r.get("effectivePeriod"))
    value_codes = concept_codes(r.get("valueCodeableConcept")) | concept_codes(r.get("interpretation"))
    return Entry(
        ref,
        "Observation",
        frozenset(concept_codes(r.get("code"))),
        _first_date(r.get("effectiveDateTime"), r.get("effectiveInstant")) or start or _first_date(r.get("issued")),
        value_codes=frozenset(value_codes),
        quantity=_quantity(r),
        body_site=frozenset(concept_codes(r.get("bodySite"))),
        text=concept_text(r.get("code")),
        raw=r,
    )


def _route_codes(r: Mapping[str, Any]) -> set[Code]:
    """Routes from every dosage structure of a medication resource (R4 names them differently)."""
    dosages = [*arr(r.get("dosageInstruction")), *arr(r.get("dosage")), obj(r.get("dosage"))]
    return {code for d in dosages for code in concept_codes(obj(d).get("route"))}


def _medication(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    rtype = str(r.get("resourceType"))
    eff_start, eff_end = period_bounds(r.get("effectivePeriod"))
    validity = obj(r.get("dispenseRequest")).get("validityPeriod")
    v_start, v_end = period_bounds(validity)
    start = (
        _first_date(r.get("effectiveDateTime"), r.get("authoredOn"), r.get("whenHandedOver")) or eff_start or v_start
    )
    end = eff_end or v_end
    if rtype == "MedicationDispense" and start and end is None:
        supply = obj(r.get("daysSupply")).get("value")
        if isinstance(supply, (int, float)) and not isinstance(supply, bool):
            end = start + timedelta(days=int(supply))
    return Entry(
        ref,
        rtype,
        frozenset(rec.medication_codes(r)),
        start,
        end=end,
        active_now=r.get("status") in ("active", "in-progress"),
        reason_codes=frozenset(concept_codes(r.get("reasonCode"))),
        route_codes=frozenset(_route_codes(r)),
        raw=r,
    )


def _allergy(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    codes = concept_codes(r.get("code"))
    for reaction in arr(r.get("reaction")):
        if isinstance(reaction, Mapping):
            codes |= concept_codes(reaction.get("substance"))
    return Entry(
        ref,
        "AllergyIntolerance",
        frozenset(codes),
        _first_date(r.get("onsetDateTime"), r.get("recordedDate")),
        text=concept_text(r.get("code")),
        raw=r,
    )


def _device(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    codes = concept_codes(r.get("type")) | concept_codes(r.get("safety"))
    return Entry(
        ref, "Device", frozenset(codes), _first_date(r.get("manufactureDate")), text=concept_text(r.get("type")), raw=r
    )


def _report(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    start, _ = period_bounds(r.get("effectivePeriod"))
    return Entry(
        ref,
        "DiagnosticReport",
        frozenset(concept_codes(r.get("code"))),
        _first_date(r.get("effectiveDateTime")) or start or _first_date(r.get("issued")),
        value_codes=frozenset(concept_codes(r.get("conclusionCode"))),
        text=str(r.get("conclusion") or ""),
        raw=r,
    )


def _imaging(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    codes: set[Code] = set()
    for modality in arr(r.get("modality")):
        key = coding_key(modality)
        if key:
            codes.add(key)
    codes |= concept_codes(r.get("procedureCode"))
    for series in arr(r.get("series")):
        if isinstance(series, Mapping):
            key = coding_key(obj(series.get("modality")))
            if key:
                codes.add(key)
    return Entry(ref, "ImagingStudy", frozenset(codes), _first_date(r.get("started")), body_site=frozenset(), raw=r)


def _encounter(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    start, end = period_bounds(r.get("period"))
    codes = concept_codes(r.get("type")) | concept_codes(r.get("serviceType"))
    cls = coding_key(obj(r.get("class")))
    value_codes = {cls} if cls else set()
    return Entry(
        ref,
        "Encounter",
        frozenset(codes),
        start,
        end=end,
        value_codes=frozenset(value_codes),
        reason_codes=frozenset(concept_codes(r.get("reasonCode"))),
        raw=r,
    )


def _coverage(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    start, end = period_bounds(r.get("period"))
    return Entry(ref, "Coverage", frozenset(concept_codes(r.get("type"))), start, end=end, raw=r)


_BUILDERS = {
    "Condition": _condition,
    "Procedure": _procedure,
    "Observation": _observation,
    "AllergyIntolerance": _allergy,
    "Device": _device,
    "DiagnosticReport": _report,
    "ImagingStudy": _imaging,
    "Encounter": _encounter,
    "Coverage": _coverage,
    **dict.fromkeys(_MEDICATION_TYPES, _medication),
}
