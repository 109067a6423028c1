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
from typing import TYPE_CHECKING, Any

from fhir_mappings.codes import (
    HIERARCHICAL_SYSTEMS,
    Code,
    CodeMatcher,
    arr,
    coding_key,
    concept_codes,
    concept_text,
    obj,
)
from fhir_mappings.dates import date_bounds
from fhir_mappings.observations import Quantity, read_value

if TYPE_CHECKING:
    from fhir_mappings.terminology import Terminology


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
_CLINICAL_ACTIVE = frozenset({"active", "recurrence", "relapse"})
_CLINICAL_RESOLVED = frozenset({"inactive", "remission", "resolved"})
_VERIFICATION_PROVEN = frozenset({"confirmed", None})
_VERIFICATION_SUSPECTED = frozenset({"provisional", "differential", "unconfirmed", "presumed"})
_VERIFICATION_EXCLUDED = frozenset({"refuted", "entered-in-error"})
_MEDICATION_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationDispense", "MedicationAdministration")
_ACTIVE_MEDICATION = frozenset({"active", "on-hold", "in-progress", "intended"})


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


def _status_code(concept: Any) -> str | None:
    """Return the first code of a status CodeableConcept (clinicalStatus etc.)."""
    if not isinstance(concept, Mapping):
        return None
    for coding in arr(concept.get("coding")):
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
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


def _clinical_reading(resource: Mapping[str, Any]) -> tuple[str, str]:
    verification = _status_code(resource.get("verificationStatus"))
    clinical = _status_code(resource.get("clinicalStatus"))
    if verification in _VERIFICATION_EXCLUDED:
        return IGNORED, f"verificationStatus {verification}"
    if verification not in _VERIFICATION_PROVEN and verification not in _VERIFICATION_SUSPECTED:
        return UNKNOWN, f"verificationStatus {verification!r} not understood"
    if clinical is not None and clinical not in _CLINICAL_ACTIVE and clinical not in _CLINICAL_RESOLVED:
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
        clinical = _status_code(resource.get("clinicalStatus"))
        return clinical is None or clinical in _CLINICAL_ACTIVE
    return True


def suspected(resource: Mapping[str, Any]) -> bool:
    """A Condition or allergy whose verificationStatus says it is not proven (provisional, differential, ...)."""
    return _status_code(resource.get("verificationStatus")) in _VERIFICATION_SUSPECTED


def _entry_dates(value: Any) -> tuple[date | None, date | None]:
    """(latest, earliest) day of a date value; both None when it does not parse."""
    bounds = date_bounds(value)
    return (bounds[1], bounds[0]) if bounds else (None, None)


def _first_bounds(*values: Any) -> tuple[date | None, date | None]:
    for value in values:
        late, early = _entry_dates(value)
        if late:
            return late, early
    return None, None


def _first_date(*values: Any) -> date | None:
    return _first_bounds(*values)[0]


def _period(period: Any) -> tuple[tuple[date | None, date | None], date | None]:
    """((latest start, earliest start), latest end) of a FHIR Period."""
    period = obj(period)
    return _entry_dates(period.get("start")), _entry_dates(period.get("end"))[0]


def _references(items: Any) -> tuple[str, ...]:
    refs = []
    for item in items or []:
        if isinstance(item, Mapping) and isinstance(item.get("reference"), str):
            refs.append(item["reference"])
    return tuple(refs)


class PatientRecord:
    """Everything known about one patient, indexed by resource type.

    Built once per request from the prefetch and fetched resources, in two passes: every
    resource is indexed first (a Medication may come after the request that names it),
    then each becomes an :class:`Entry` when it counts, is dropped when its status says
    it never counts, or is kept as :class:`Unread` when it cannot be understood (an
    unknown code system or code, a product code that maps to no ingredient, a value in a
    shape the reader cannot read, a status it does not know, an unresolved reference).
    Criteria read ``unread`` so that incomprehension is never taken for silence.
    ``incomplete`` maps a resource type (or ``"*"``) to why the record of that type may
    be missing resources (an error OperationOutcome in a search Bundle, a page not read).
    """

    def __init__(
        self,
        resources: Iterable[Mapping[str, Any]],
        patient_id: str | None,
        terminology: Terminology,
        incomplete: Mapping[str, str] | None = None,
    ) -> None:
        self.patient_id = patient_id
        self.terminology = terminology
        self.patient: Mapping[str, Any] | None = None
        self._by_type: dict[str, list[Entry]] = {}
        self._by_ref: dict[str, Mapping[str, Any]] = {}
        self.questionnaire_responses: list[Mapping[str, Any]] = []
        self.ignored: list[str] = []
        self.unread: dict[str, list[Unread]] = {}
        self.incomplete: dict[str, str] = dict(incomplete or {})
        # Per-record lookups (see entries_matching): built on first use, dropped when an entry is added.
        self._code_index: dict[str, _TypeIndex] = {}
        self._matched: dict[tuple[Any, ...], tuple[CodeMatcher, list[Entry]]] = {}
        self._classified: dict[Code, frozenset[Code] | None] = {}
        pending = [(ref, r) for r in _flatten(resources, self.incomplete) if (ref := self._index(r))]
        for ref, resource in pending:
            self._add(ref, resource)
        for entries in self._by_type.values():
            entries.sort(key=lambda e: (e.start or date.min, e.ref))

    def _index(self, resource: Mapping[str, Any]) -> str | None:
        """Index a resource by its reference; None for a duplicate or one without a type."""
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            return None
        ref = f"{rtype}/{resource.get('id') or '#' + str(len(self._by_ref))}"
        if ref in self._by_ref:
            return None  # the same resource from prefetch and from a search: count it once
        self._by_ref[ref] = resource
        return ref

    def _add(self, ref: str, resource: Mapping[str, Any]) -> None:
        rtype = str(resource["resourceType"])
        if rtype == "Patient":
            if patient_matches(resource, self.patient_id, own=True):
                self.patient = self.patient or resource
            return
        if not patient_matches(resource, self.patient_id):
            self.ignored.append(ref)
            return
        reading, why = status_reading(resource)
        if reading == IGNORED:
            self.ignored.append(ref)
            return
        if rtype == "QuestionnaireResponse":
            if reading == COUNTS:
                self.questionnaire_responses.append(resource)
            else:
                self.ignored.append(ref)
            return
        builder = _BUILDERS.get(rtype)
        if builder is None:
            return
        built = builder(self, ref, resource)
        if built is None:
            self.ignored.append(ref)  # read, and not evidence itself (a resolved allergy, a panel read by its parts)
            return
        if isinstance(built, Unread):
            self._unread(built)
            return
        if reading == UNKNOWN:
            self._unread(Unread(ref, rtype, why, day=built.start))
        elif reading == PENDING:
            self._unread(Unread(ref, rtype, why, built.codes | built.value_codes, built.start))
        else:
            self._by_type.setdefault(rtype, []).append(built)

    def _unread(self, item: Unread) -> None:
        self.unread.setdefault(item.type, []).append(item)

    def add_entry(self, entry: Entry) -> None:
        """Add an entry derived from another (an Observation component)."""
        self._by_type.setdefault(entry.type, []).append(entry)
        self._code_index.clear()
        self._matched.clear()

    def resolve(self, reference: str) -> Mapping[str, Any] | None:
        """Return the raw resource a literal reference ("Type/id") points to."""
        if reference in self._by_ref:
            return self._by_ref[reference]
        target = literal_target(reference)
        return self._by_ref.get(f"{target[0]}/{target[1]}") if target else None

    def entries(self, *types: str) -> list[Entry]:
        """Return counted entries of the given types, oldest first within each type."""
        out: list[Entry] = []
        for rtype in types:
            out.extend(self._by_type.get(rtype, ()))
        return out

    def entries_matching(
        self, types: tuple[str, ...], matcher: CodeMatcher, use_values: bool = True, narrower: bool = False
    ) -> list[Entry]:
        """The entries of ``entries(*types)``, in that order, that ``matcher`` can say anything about.

        An entry is listed when one of its codes (with its value codes when ``use_values``) is a
        member, or, with ``narrower``, when one of its codes is a less specific code of a member
        (:meth:`CodeMatcher.narrower_members`). Every other entry is one a loop over
        ``entries(*types)`` that tests membership would skip, so looping over this list decides
        the same. Each distinct code of the record is tested once per matcher, not once per entry,
        and the answer is kept for the record's lifetime (the matchers are the CarePath's own).
        """
        key = (types, id(matcher), use_values, narrower)
        cached = self._matched.get(key)
        if cached is not None and cached[0] is matcher:
            return cached[1]
        found: list[Entry] = []
        # narrower_members is False for a code of any other system.
        narrower_systems = (matcher.prefix_systems() | HIERARCHICAL_SYSTEMS) if narrower else set()
        for rtype in types:
            index = self._index_of(rtype)
            hits: set[int] = set()
            codes = index.any_codes if use_values else index.codes
            for code in matcher.members_among(codes.keys(), index.any_systems if use_values else index.systems):
                hits.update(codes[code])
            for system in narrower_systems:
                for code in index.systems.get(system, ()):
                    if matcher.narrower_members(code):
                        hits.update(index.codes[code])
            found.extend(index.entries[i] for i in sorted(hits))
        self._matched[key] = (matcher, found)
        return found

    def _index_of(self, rtype: str) -> _TypeIndex:
        index = self._code_index.get(rtype)
        if index is None:
            index = self._code_index[rtype] = _TypeIndex.build(self._by_type.get(rtype, []))
        return index

    def unread_of(self, *types: str) -> list[Unread]:
        """Return the resources of these types that were not understood."""
        return [u for rtype in types for u in self.unread.get(rtype, ())]

    def incomplete_for(self, *types: str) -> list[str]:
        """Return why the record of these types may be incomplete (empty when it is complete)."""
        found = [self.incomplete[t] for t in types if t in self.incomplete]
        if "*" in self.incomplete:
            found.append(self.incomplete["*"])
        return sorted(set(found))

    def has_any(self) -> bool:
        """Return True when the record holds anything beyond the Patient."""
        return bool(self._by_type) or bool(self.questionnaire_responses) or bool(self.unread)

    def read_concept(self, concept: Any) -> tuple[frozenset[Code], list[str]]:
        """Return a concept's codes with what the terminology classifies them as, and its unknown codings.

        The codes come back expanded (a SNOMED finding with its ICD-10-CM class, a drug
        product with its ingredients), so value sets written in one system match data sent
        in another. The list names each coding the terminology does not know; the concept
        is understood when at least one coding is known.
        """
        # One walk over the codings (the same ones concept_codes reads): their codes, and those without one.
        codes: set[Code] = set()
        uncoded = 0
        for coding in _codings(concept):
            if isinstance(coding.get("code"), str):
                key = coding_key(coding)
                if key:
                    codes.add(key)
            elif coding:
                uncoded += 1
        known: set[Code] = set()
        unknown: list[str] = []
        for code in codes:
            expansion = self._classify(code)
            if expansion is not None:
                known.add(code)
                known |= expansion
            else:
                unknown.append(describe_code(code))
        unknown.extend(["a coding without a code"] * uncoded)
        return frozenset(known), unknown

    def _classify(self, code: Code) -> frozenset[Code] | None:
        """``terminology.expand(code)`` when the code is known, None when it is not (asked once per record)."""
        try:
            return self._classified[code]
        except KeyError:
            known = self.terminology.is_known(code)
            expansion = self._classified[code] = self.terminology.expand(code) if known else None
            return expansion

    def classified(self, codes: frozenset[Code]) -> frozenset[Code]:
        """Return ``codes`` with what the terminology classifies the known ones as."""
        out = set(codes)
        for code in codes:
            expansion = self._classify(code)
            if expansion:
                out |= expansion
        return frozenset(out)

    def medication_codes(self, r: Mapping[str, Any]) -> tuple[frozenset[Code], str | None]:
        """Return a medication resource's classified codes, or why it could not be classified.

        Follows ``medicationReference`` to a contained Medication or one anywhere in the
        record; product codes (SCD, SBD, packs, NDC) become their ingredients and classes
        through the terminology; when no code is known, the ingredient names in the text or
        displays are the fallback. A medication that is still unclassified is not understood.
        """
        concepts: list[Any] = [r.get("medicationCodeableConcept")]
        ref = obj(r.get("medicationReference")).get("reference")
        if isinstance(ref, str):
            med = _contained(r, ref) or (None if ref.startswith("#") else self.resolve(ref))
            if med is None:
                return frozenset(), f"medicationReference {ref} could not be resolved"
            concepts.append(med.get("code"))
            concepts.extend(obj(i).get("itemCodeableConcept") for i in arr(med.get("ingredient")))
        elif r.get("medicationCodeableConcept") is None:
            return frozenset(), "no medication given"
        codes: set[Code] = set()
        unknown: list[str] = []
        for concept in concepts:
            found, missing = self.read_concept(concept)
            codes |= found
            unknown += missing
        if codes:
            return frozenset(codes), None
        named = self.terminology.classify_text(" ; ".join(concept_text(c) for c in concepts))
        if named:
            return frozenset(named), None
        shown = ", ".join(unknown) or "no code"
        return frozenset(), f"{shown} not classified"


@dataclass(slots=True)
class _TypeIndex:
    """The entries of one type with, for each distinct code, the positions of the entries that carry it."""

    entries: list[Entry]
    codes: dict[Code, list[int]]  # in ``Entry.codes``
    any_codes: dict[Code, list[int]]  # in ``Entry.codes`` or ``Entry.value_codes``
    systems: dict[str, list[Code]]  # the keys of ``codes`` by system
    any_systems: dict[str, list[Code]]  # the keys of ``any_codes`` by system

    @classmethod
    def build(cls, entries: list[Entry]) -> _TypeIndex:
        codes: dict[Code, list[int]] = {}
        any_codes: dict[Code, list[int]] = {}
        for i, entry in enumerate(entries):
            for code in entry.codes:
                codes.setdefault(code, []).append(i)
            for code in entry.codes | entry.value_codes:
                any_codes.setdefault(code, []).append(i)
        return cls(list(entries), codes, any_codes, _by_system(codes), _by_system(any_codes))


def _by_system(codes: Iterable[Code]) -> dict[str, list[Code]]:
    out: dict[str, list[Code]] = {}
    for code in codes:
        out.setdefault(code[0], []).append(code)
    return out


def _codings(concept: Any) -> list[Mapping[str, Any]]:
    if concept is None:
        return []
    if isinstance(concept, list):
        return [c for item in concept for c in _codings(item)]
    return [c for c in arr(obj(concept).get("coding")) if type(c) is dict or isinstance(c, Mapping)]


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


def bundle_problems(bundle: Mapping[str, Any]) -> list[str]:
    """Return why a search Bundle may not hold the whole result (product-decisions.md §1).

    An OperationOutcome entry of severity error or fatal says the search partly failed;
    a ``next`` link says there are pages this Bundle does not hold.
    """
    problems = []
    for entry in arr(bundle.get("entry")):
        resource = obj(obj(entry).get("resource"))
        if resource.get("resourceType") == "OperationOutcome" and any(
            obj(i).get("severity") in ("error", "fatal") for i in arr(resource.get("issue"))
        ):
            problems.append("the search answered with an error (OperationOutcome)")
    if any(obj(link).get("relation") == "next" for link in arr(bundle.get("link"))):
        problems.append("further pages of the search were not read")
    return problems


def _bundle_types(bundle: Mapping[str, Any]) -> set[str]:
    types = {obj(obj(e).get("resource")).get("resourceType") for e in arr(bundle.get("entry"))}
    return {t for t in types if isinstance(t, str) and t not in ("OperationOutcome", "Bundle")}


def _flatten(resources: Iterable[Any], incomplete: dict[str, str]) -> Iterable[Mapping[str, Any]]:
    """Yield resources, unpacking Bundles and noting in ``incomplete`` what a Bundle says it lacks.

    A Bundle whose entries name no type leaves every type in doubt (``"*"``); so does an
    error OperationOutcome given in place of a resource.
    """
    for item in resources:
        if not isinstance(item, Mapping):
            continue
        rtype = item.get("resourceType")
        if rtype == "Bundle":
            problems = bundle_problems(item)
            if problems:
                for t in _bundle_types(item) or {"*"}:
                    incomplete.setdefault(t, "; ".join(problems))
            entries = arr(item.get("entry"))
            yield from _flatten((obj(e).get("resource") for e in entries), incomplete)
        elif rtype == "OperationOutcome":
            if any(obj(i).get("severity") in ("error", "fatal") for i in arr(item.get("issue"))):
                incomplete.setdefault("*", "a search answered with an error (OperationOutcome)")
        else:
            yield item


def _unread_concept(ref: str, rtype: str, unknown: list[str], day: date | None) -> Unread:
    shown = ", ".join(unknown) if unknown else "no coded value"
    return Unread(ref, rtype, f"{shown} not classified", day=day)


def _condition(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry | Unread:
    """A Condition; its onset (never its recordedDate) dates it, and abatement ends it."""
    codes, unknown = rec.read_concept(r.get("code"))
    start, start_lo = _onset(rec, r)
    if not codes:
        return _unread_concept(ref, "Condition", unknown, start)
    end = _first_date(r.get("abatementDateTime"), obj(r.get("abatementPeriod")).get("end"))
    if end is None:
        end = _abatement_age(rec, r)
    clinical = _status_code(r.get("clinicalStatus"))
    abated = any(k.startswith("abatement") for k in r)
    active = clinical in _CLINICAL_ACTIVE if clinical is not None else not abated
    if clinical in _CLINICAL_RESOLVED and end is None:
        # Resolved on an unknown day: it was last known active when it was recorded.
        end = _first_date(r.get("recordedDate")) or start
    return Entry(
        ref,
        "Condition",
        codes,
        start,
        end=end,
        body_site=rec.read_concept(r.get("bodySite"))[0],
        text=concept_text(r.get("code")),
        raw=r,
        start_lo=start_lo,
        active_now=active,
        suspected=suspected(r),
        status=clinical,
    )


def _onset(rec: PatientRecord, r: Mapping[str, Any]) -> tuple[date | None, date | None]:
    """(latest, earliest) onset from onsetDateTime, onsetPeriod, onsetAge or onsetString."""
    late, early = _first_bounds(r.get("onsetDateTime"), obj(r.get("onsetPeriod")).get("start"), r.get("onsetString"))
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


def _procedure(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry | Unread:
    (p_start, p_start_lo), end = _period(r.get("performedPeriod"))
    start, start_lo = _first_bounds(r.get("performedDateTime"), r.get("performedString"))
    start, start_lo = (start, start_lo) if start else (p_start, p_start_lo)
    codes, unknown = rec.read_concept(r.get("code"))
    if not codes:
        return _unread_concept(ref, "Procedure", unknown, start)
    return Entry(
        ref,
        "Procedure",
        codes,
        start,
        end=end,
        body_site=rec.read_concept(r.get("bodySite"))[0],
        reason_codes=rec.read_concept(r.get("reasonCode"))[0],
        reason_refs=_references(r.get("reasonReference")),
        text=concept_text(r.get("code")),
        raw=r,
        start_lo=start_lo,
    )


def _observation(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry | Unread | None:
    """An Observation with its value read (observations.read_value); components become entries of their own."""
    (p_start, p_lo), _ = _period(r.get("effectivePeriod"))
    start, start_lo = _first_bounds(r.get("effectiveDateTime"), r.get("effectiveInstant"))
    if start is None:
        start, start_lo = (p_start, p_lo) if p_start else _first_bounds(r.get("issued"))
    codes, unknown = rec.read_concept(r.get("code"))
    understood_parts = 0
    for component in arr(r.get("component")):
        part = _observation_part(rec, ref, obj(component), start, start_lo, r)
        if isinstance(part, Unread):
            rec._unread(part)
        else:
            rec.add_entry(part)
            understood_parts += 1
    if not codes:
        # A panel under a local code is read through its components; anything else is not understood.
        return None if understood_parts else _unread_concept(ref, "Observation", unknown, start)
    value = read_value(r, rec)
    if value.unreadable:
        return Unread(ref, "Observation", value.unreadable, codes | value.codes, start)
    return Entry(
        ref,
        "Observation",
        codes,
        start,
        value_codes=value.codes,
        quantity=value.quantity,
        body_site=rec.read_concept(r.get("bodySite"))[0],
        text=concept_text(r.get("code")),
        raw=r,
        start_lo=start_lo,
        absent=value.absent,
    )


def _observation_part(
    rec: PatientRecord,
    ref: str,
    component: Mapping[str, Any],
    start: date | None,
    start_lo: date | None,
    parent: Mapping[str, Any],
) -> Entry | Unread:
    codes, unknown = rec.read_concept(component.get("code"))
    if not codes:
        # A panel's unknown component (a local "PLT" row) may be the very result a criterion reads.
        return _unread_concept(ref, "Observation", [f"component {c}" for c in unknown] or ["a component"], start)
    value = read_value(component, rec)
    if value.unreadable:
        return Unread(ref, "Observation", f"component {value.unreadable}", codes | value.codes, start)
    return Entry(
        ref,
        "Observation",
        codes,
        start,
        value_codes=value.codes,
        quantity=value.quantity,
        raw=parent,
        start_lo=start_lo,
        absent=value.absent,
    )


def _route_codes(rec: PatientRecord, r: Mapping[str, Any]) -> frozenset[Code]:
    """Routes from every dosage structure of a medication resource (R4 names them differently)."""
    dosages = [*arr(r.get("dosageInstruction")), *arr(r.get("dosage")), obj(r.get("dosage"))]
    # Raw codes: a route the terminology does not know is still not "by mouth".
    return frozenset(code for d in dosages for code in concept_codes(obj(d).get("route")))


def _medication(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry | Unread:
    """A medication exposure: its start, its end when the data gives one, and whether it is still in force."""
    rtype = str(r.get("resourceType"))
    (eff_start, eff_lo), eff_end = _period(r.get("effectivePeriod"))
    (v_start, v_lo), v_end = _period(obj(r.get("dispenseRequest")).get("validityPeriod"))
    start, start_lo = _first_bounds(
        r.get("effectiveDateTime"), r.get("authoredOn"), r.get("whenHandedOver"), r.get("dateAsserted")
    )
    if start is None:
        start, start_lo = (eff_start, eff_lo) if eff_start else (v_start, v_lo)
    end = eff_end or v_end
    if end is None and start is not None:
        end = _supply_end(r, start)
    codes, why = rec.medication_codes(r)
    if why is not None:
        return Unread(ref, rtype, why, day=start)
    return Entry(
        ref,
        rtype,
        codes,
        start,
        end=end,
        active_now=r.get("status") in _ACTIVE_MEDICATION,
        reason_codes=rec.read_concept(r.get("reasonCode"))[0],
        route_codes=_route_codes(rec, r),
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


def _allergy(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry | Unread | None:
    clinical = _status_code(r.get("clinicalStatus"))
    if clinical in _CLINICAL_RESOLVED:
        return None  # no longer allergic
    codes, unknown = rec.read_concept(r.get("code"))
    for reaction in arr(r.get("reaction")):
        found, missing = rec.read_concept(obj(reaction).get("substance"))
        codes, unknown = codes | found, unknown + missing
    if not codes:
        named = rec.terminology.classify_text(concept_text(r.get("code")))
        if not named:
            return _unread_concept(ref, "AllergyIntolerance", unknown, None)
        codes = frozenset(named)
    start, start_lo = _first_bounds(r.get("onsetDateTime"), r.get("recordedDate"))
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


def _device(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry | Unread:
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
        _first_date(r.get("manufactureDate")),
        text=concept_text(r.get("type")),
        raw=r,
        active_now=True,
    )


def _report(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry | Unread:
    (p_start, p_lo), _ = _period(r.get("effectivePeriod"))
    start, start_lo = _first_bounds(r.get("effectiveDateTime"))
    if start is None:
        start, start_lo = (p_start, p_lo) if p_start else _first_bounds(r.get("issued"))
    codes, unknown = rec.read_concept(r.get("code"))
    if not codes:
        return _unread_concept(ref, "DiagnosticReport", unknown, start)
    return Entry(
        ref,
        "DiagnosticReport",
        codes,
        start,
        value_codes=rec.read_concept(r.get("conclusionCode"))[0],
        text=str(r.get("conclusion") or ""),
        raw=r,
        start_lo=start_lo,
    )


def _imaging(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    codes: set[Code] = set()
    for modality in arr(r.get("modality")):
        key = coding_key(modality)
        if key:
            codes.add(key)
    codes |= rec.read_concept(r.get("procedureCode"))[0]
    body: set[Code] = set()
    for series in arr(r.get("series")):
        key = coding_key(obj(obj(series).get("modality")))
        if key:
            codes.add(key)
        body |= rec.read_concept({"coding": [obj(obj(series).get("bodySite"))]})[0]
    start, start_lo = _first_bounds(r.get("started"))
    return Entry(ref, "ImagingStudy", frozenset(codes), start, body_site=frozenset(body), raw=r, start_lo=start_lo)


def _encounter(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    """An Encounter. Its type is often a local code: that only means it adds no evidence, not that it hides any."""
    (start, start_lo), end = _period(r.get("period"))
    codes = rec.read_concept(r.get("type"))[0] | rec.read_concept(r.get("serviceType"))[0]
    cls = coding_key(obj(r.get("class")))
    value_codes = {cls} if cls else set()
    return Entry(
        ref,
        "Encounter",
        codes,
        start,
        end=end,
        value_codes=frozenset(value_codes),
        reason_codes=rec.read_concept(r.get("reasonCode"))[0],
        raw=r,
        start_lo=start_lo,
    )


def _coverage(rec: PatientRecord, ref: str, r: Mapping[str, Any]) -> Entry:
    (start, start_lo), end = _period(r.get("period"))
    return Entry(ref, "Coverage", frozenset(concept_codes(r.get("type"))), start, end=end, raw=r, start_lo=start_lo)


_BUILDERS: dict[str, Any] = {
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
