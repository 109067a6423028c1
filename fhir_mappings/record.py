"""The patient's record as an index of countable entries.

History resources are read as plain JSON (full model validation of a 60-entry
prefetch costs 20-30 ms, see feasibility.md §1). Each resource that *counts*
(right status, not entered in error, not refuted) becomes one ``Entry`` with
its normalised codes and dates, so rules never touch raw JSON or statuses.

This module holds :class:`PatientRecord`: the order in which a record is read
(references first, then the Patient, then every other resource through its
status rule and its type's reader) and the lookups criteria use (entries by
type, entries a value set can say anything about, what was not understood, what
may be missing). What a status means is in ``status.py``; how each type is read
in ``readers.py`` and the modules it names; references and Bundles in
``references.py``. The names other code imports from here (``Entry``,
``status_reading``, ``literal_target``, ...) are re-exported.

Reading is done once per call and shared by every decision in it. Every
resource's status and codes are read when the record is built, so what was not
understood is known at once (fail closed: product-decisions.md §1); the rest of
an entry (dates, values, body sites, reasons) is read when a criterion first
asks for it, and most of a long history is never asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from fhir_mappings.code_index import CodeIndex
from fhir_mappings.codes import Code, CodeMatcher, concept_keys, normalised_key
from fhir_mappings.entries import Deferred, Entry, Unread, describe_code
from fhir_mappings.readers import READERS
from fhir_mappings.references import (
    bundle_problems,
    contained,
    flatten,
    foreign_patient_elements,
    literal_target,
    patient_matches,
)
from fhir_mappings.status import (
    COUNTS,
    IGNORED,
    LISTED_READINGS,
    PENDING,
    UNKNOWN,
    StatusRule,
    counts_as_evidence,
    status_reading,
    suspected,
)

if TYPE_CHECKING:
    from fhir_mappings.terminology import Terminology

__all__ = [
    "COUNTS",
    "IGNORED",
    "PENDING",
    "UNKNOWN",
    "Entry",
    "PatientRecord",
    "StatusRule",
    "Unread",
    "bundle_problems",
    "contained",
    "counts_as_evidence",
    "describe_code",
    "foreign_patient_elements",
    "literal_target",
    "patient_matches",
    "status_reading",
    "suspected",
]

Slot = Entry | Deferred
_NOTHING: frozenset[Code] = frozenset()


_MANY: Any = object()  # _plain_keys: not a concept of JSON's usual shape


def _plain_keys(concept: Any) -> Any:
    """The codes ``concept_keys`` reads from a concept of JSON's usual shape (a dict, or a list of one such
    dict, whose codings are objects with a string code and a string or absent system): for one coding its key
    (None when that is not a code), for several the set of their keys (in concept_keys' order); for any other
    shape (a coding without a code among them) :data:`_MANY`, and the general walk reads it."""
    if type(concept) is list and len(concept) == 1:
        concept = concept[0]
    if type(concept) is not dict:
        return _MANY
    codings = concept.get("coding")
    if type(codings) is not list or not codings:
        return _MANY
    if len(codings) == 1:
        coding = codings[0]
        if type(coding) is not dict:
            return _MANY
        raw, system = coding.get("code"), coding.get("system")
        if type(raw) is not str or not (system is None or type(system) is str):
            return _MANY
        return normalised_key(system, raw)
    codes: set[Code] = set()
    for coding in codings:
        if type(coding) is not dict:
            return _MANY
        raw, system = coding.get("code"), coding.get("system")
        if type(raw) is not str or not (system is None or type(system) is str):
            return _MANY
        key = normalised_key(system, raw)
        if key:
            codes.add(key)
    return codes


def _sort_key(entry: Entry) -> tuple[date, str]:
    return entry.start or date.min, entry.ref


class PatientRecord:
    """Everything known about one patient, indexed by resource type.

    Built once per request from the prefetch and fetched resources, in two passes: every
    resource is indexed first (a Medication may come after the request that names it, the
    Patient after a Condition dated by age), then each is read when it counts, dropped when
    its status says it never counts, or kept as :class:`Unread` when it cannot be understood
    (an unknown code system or code, a product code that maps to no ingredient, a value in a
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
        self._own_ref = f"Patient/{patient_id}" if patient_id is not None else None
        self.terminology = terminology
        self.patient: Mapping[str, Any] | None = None
        self._slots: dict[str, list[Slot]] = {}
        self._by_ref: dict[str, Mapping[str, Any]] = {}
        self.questionnaire_responses: list[Mapping[str, Any]] = []
        self.unreadable_responses: list[Mapping[str, Any]] = []  # a status not understood: may correct any answer
        self.ignored: list[str] = []
        self.unread: dict[str, list[Unread]] = {}
        self.incomplete: dict[str, str] = dict(incomplete or {})
        self._parts: list[Slot | Unread] | None = None  # parts of the resource being read (see add_part)
        # Lookups built on first use (see entries_matching), kept for the record's lifetime.
        self._sorted: dict[str, list[Entry]] = {}
        self._code_index: CodeIndex | None = None
        self._matched: dict[tuple[Any, ...], tuple[CodeMatcher, list[Entry]]] = {}
        self._hits: dict[tuple[Any, ...], tuple[CodeMatcher, set[int]]] = {}
        self._known_sets: dict[frozenset[Code], frozenset[Code]] = {}  # _known of several codes
        for ref, rtype, resource in self._indexed(resources, patient_id):
            self._add(ref, rtype, resource)

    def _indexed(self, resources: Iterable[Mapping[str, Any]], patient_id: str | None) -> list[tuple[str, str, Any]]:
        """Index every resource by its reference and find the Patient; the others, in reading order.

        A resource without a type is skipped, a duplicate (the same resource from prefetch and from
        a search) counted once.
        """
        by_ref = self._by_ref
        pending = []
        for resource in flatten(resources, self.incomplete):
            rtype = resource.get("resourceType")
            if not isinstance(rtype, str):
                continue
            ref = f"{rtype}/{resource.get('id') or '#' + str(len(by_ref))}"
            if ref in by_ref:
                continue
            by_ref[ref] = resource
            if rtype != "Patient":
                pending.append((ref, rtype, resource))
            elif patient_matches(resource, patient_id, own=True):
                self.patient = self.patient or resource
        return pending

    def _add(self, ref: str, rtype: str, resource: Mapping[str, Any]) -> None:
        subject = resource.get("subject")
        own = type(subject) is dict and subject.get("reference") == self._own_ref  # patient_matches' first test
        if not own and not patient_matches(resource, self.patient_id):
            self.ignored.append(ref)
            return
        status = resource.get("status")
        listed = LISTED_READINGS.get((rtype, status)) if type(status) is str else None
        if listed is None or (rtype == "MedicationRequest" and resource.get("doNotPerform") is True):
            listed = status_reading(resource)
        reading, why = listed  # = status_reading(resource)
        if reading == IGNORED:
            self.ignored.append(ref)
            return
        if rtype == "QuestionnaireResponse":
            if reading == COUNTS:
                self.questionnaire_responses.append(resource)
            elif reading == UNKNOWN:
                self.unreadable_responses.append(resource)
            else:
                self.ignored.append(ref)
            return
        reader = READERS.get(rtype)
        if reader is None:
            return
        self._parts = None  # a list only for a resource that has parts (add_part)
        read = reader(self, ref, resource)
        parts = self._parts
        if read is None:
            self.ignored.append(ref)  # read, and not evidence itself (a resolved allergy, a panel read by its parts)
        elif reading == COUNTS and type(read) is not Unread and self._code_index is None and not self._sorted:
            slots = self._slots.get(read.type)  # keep(read), without its checks: the usual case
            if slots is None:
                self._slots[read.type] = [read]
            else:
                slots.append(read)
        else:
            self._file(ref, rtype, read, reading, why)
        for part in parts or ():  # a panel's components are read under the panel's status, never on their own
            self._file(ref, rtype, part, reading, why)

    def add_part(self, part: Slot | Unread) -> None:
        """Hand the record one part of the resource being read (an Observation's component).

        The part is filed with its resource's status: a component of a preliminary panel is
        pending like the panel, never a final result of its own.
        """
        if self._parts is None:
            self._parts = [part]
        else:
            self._parts.append(part)

    def _file(self, ref: str, rtype: str, read: Slot | Unread, reading: str, why: str) -> None:
        """Keep what was read when its status counts; otherwise keep it as not understood, naming why."""
        if isinstance(read, Unread) or reading == COUNTS:
            self.keep(read)
            return
        built = read.built(self) if isinstance(read, Deferred) else read
        codes = built.codes | built.value_codes if reading == PENDING else frozenset()
        self.keep(Unread(ref, rtype, why, codes, built.start))

    def keep(self, item: Entry | Deferred | Unread) -> None:
        """Keep what a reader made of a resource or of one of its parts, once its status has been weighed."""
        if isinstance(item, Unread):
            self.unread.setdefault(item.type, []).append(item)
            return
        slots = self._slots.get(item.type)
        if slots is None:
            self._slots[item.type] = [item]
        else:
            slots.append(item)
        if self._code_index is not None or self._sorted:  # kept after a lookup: forget the stale lookups
            self._sorted.pop(item.type, None)
            self._code_index = None
            self._matched.clear()
            self._hits.clear()

    def _entry(self, slot: Slot) -> Entry:
        return slot.built(self) if isinstance(slot, Deferred) else slot

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
            out.extend(self._of_type(rtype))
        return out

    def _of_type(self, rtype: str) -> list[Entry]:
        found = self._sorted.get(rtype)
        if found is None:
            found = self._sorted[rtype] = sorted(map(self._entry, self._slots.get(rtype, ())), key=_sort_key)
        return found

    def entry_of(self, rtype: str, resource: Mapping[str, Any] | None) -> Entry | None:
        """The first counted entry of this type read from ``resource`` (an Encounter the order names), if any."""
        if resource is None:
            return None
        for slot in self._slots.get(rtype, ()):
            if slot.raw is resource:
                return self._entry(slot)
        return None

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
        Only the listed entries are read in full.
        """
        key = (types, id(matcher), use_values, narrower)
        cached = self._matched.get(key)
        if cached is not None and cached[0] is matcher:
            return cached[1]
        index = self._code_index_built()
        hits = self._positions(index, matcher, use_values, narrower)
        slots = index.slots
        by_type: dict[str, list[Any]] = {}  # the hit slots (Entry or Deferred) of each type
        for i in sorted(hits):  # reading order within each type
            slot = slots[i]
            at = by_type.get(slot.type)
            if at is None:
                by_type[slot.type] = [slot]
            else:
                at.append(slot)
        found: list[Entry] = []
        for rtype in types:
            of_type = by_type.get(rtype)
            if of_type:  # only the types asked for are read in full (self._entry, inline)
                entries = [(s.entry or s.built(self)) if type(s) is Deferred else s for s in of_type]
                # Sorting the hits the way entries() sorts (a stable sort) keeps its order.
                found.extend(sorted(entries, key=_sort_key))
        self._matched[key] = (matcher, found)
        return found

    def _positions(self, index: CodeIndex, matcher: CodeMatcher, use_values: bool, narrower: bool) -> set[int]:
        """The slots of every type ``matcher`` can say anything about, kept for the record's lifetime."""
        key = (id(matcher), use_values, narrower)
        cached = self._hits.get(key)
        if cached is None or cached[0] is not matcher:
            cached = self._hits[key] = (matcher, index.positions(matcher, use_values, narrower))
        return cached[1]

    def _code_index_built(self) -> CodeIndex:
        if self._code_index is None:
            self._code_index = CodeIndex.build([slot for of_type in self._slots.values() for slot in of_type])
        return self._code_index

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
        return bool(self._slots) or bool(self.questionnaire_responses) or bool(self.unread)

    def read_concept(self, concept: Any) -> tuple[frozenset[Code], list[str]]:
        """Return a concept's codes with what the terminology classifies them as, and its unknown codings.

        The codes come back expanded (a SNOMED finding with its ICD-10-CM class, a drug
        product with its ingredients), so value sets written in one system match data sent
        in another. The concept is understood when at least one coding is known; when none
        is, the list names each coding the terminology does not know (it is empty otherwise).
        """
        key = _plain_keys(concept)
        if type(key) is set:  # several codings, as JSON usually sends them
            known = self._known(key)
            if known:
                return known, []
            with_classes = self.terminology.with_classes
            return frozenset(), [describe_code(code) for code in key if with_classes(code) is None]
        if key is not _MANY:  # one coding: its key (or None) without the general walk
            if key is None:
                return frozenset(), []
            known = self.terminology.with_classes(key)
            return (known, []) if known else (frozenset(), [describe_code(key)])
        if concept is None:
            return frozenset(), []
        codes, uncoded = concept_keys(concept)
        known = self._known(codes)
        if known:
            return known, []
        with_classes = self.terminology.with_classes
        missing = [code for code in codes if with_classes(code) is None]
        return frozenset(), [describe_code(code) for code in missing] + ["a coding without a code"] * uncoded

    def classes(self, concept: Any) -> frozenset[Code]:
        """``read_concept(concept)[0]``: the known codes with their classes, without naming the unknown ones."""
        if concept is None:
            return _NOTHING
        key = _plain_keys(concept)
        if type(key) is set:
            return self._known(key)
        if key is not _MANY:
            return (self.terminology.with_classes(key) or _NOTHING) if key is not None else _NOTHING
        return self._known(concept_keys(concept)[0])

    def _known(self, codes: set[Code]) -> frozenset[Code]:
        """The known codes among ``codes``, each with its classes (empty when none is known)."""
        with_classes = self.terminology.with_classes
        if len(codes) == 1:  # the common case: one coding, its classes remembered as one set
            return with_classes(next(iter(codes))) or _NOTHING
        key = frozenset(codes)
        known = self._known_sets.get(key)
        if known is None:  # remembered for the record: entries coded alike share one set, indexed once
            known = self._known_sets[key] = self._merged_classes(codes)
        return known

    def _merged_classes(self, codes: set[Code]) -> frozenset[Code]:
        with_classes = self.terminology.with_classes
        first: frozenset[Code] | None = None
        merged: set[Code] | None = None
        for code in codes:
            classes = with_classes(code)
            if classes is None:
                continue
            if first is None:
                first = classes  # one known coding among unknown ones (a local code beside LOINC): its set as is
            else:
                merged = (merged or set(first)) | classes
        return frozenset(merged) if merged else (first or _NOTHING)

    def classified(self, codes: frozenset[Code]) -> frozenset[Code]:
        """Return ``codes`` with what the terminology classifies the known ones as."""
        out = set(codes)
        for code in codes:
            expansion = self.terminology.classify(code)
            if expansion:
                out |= expansion
        return frozenset(out)
