"""The record index: entries read on first use decide exactly as entries read at once, and fail closed.

The reader reads every resource's status and codes when the record is built
and the rest of an entry when a criterion first asks for it. These tests pin
what that must never change: what was not understood is known before any
entry is asked for, a lookup by value set lists the same entries in the same
order as a scan of every entry, and nothing depends on the order the resources
came in.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from bench.bench_engine import sized_record
from cds_server.carepath_store import load_carepaths, terminology_for
from fhir_mappings.codes import CodeMatcher
from fhir_mappings.record import PatientRecord
from tests import builders as b

CAREPATHS = load_carepaths()
TERMINOLOGY = terminology_for(CAREPATHS)
LOCAL = "urn:oid:1.2.3.4.5"
TYPES = ("Condition", "Observation", "Procedure", "MedicationRequest", "MedicationStatement", "Encounter")


def test_what_was_not_understood_is_known_before_any_entry_is_read() -> None:
    unknown_status = b.procedure("odd", "64490", "2024-01-02", status="weird")
    local_result = {
        "resourceType": "Observation",
        "id": "local",
        "status": "final",
        "code": {"coding": [{"system": LOCAL, "code": "PLT"}]},
        "effectiveDateTime": "2024-01-03",
        "valueQuantity": {"value": 40},
    }
    record = PatientRecord([b.patient(), unknown_status, local_result], None, TERMINOLOGY)
    assert [u.ref for u in record.unread_of("Procedure", "Observation")] == ["Procedure/odd", "Observation/local"]
    assert record.unread_of("Procedure")[0].codes == frozenset()  # bears on every criterion reading Procedures


def test_a_condition_dated_by_age_reads_the_patient_wherever_it_stands() -> None:
    condition = b.condition("c", "M54.2", None, onsetAge={"value": 50, "unit": "a"})
    first = PatientRecord([condition, b.patient(birth="1970-03-01")], None, TERMINOLOGY).entries("Condition")
    last = PatientRecord([b.patient(birth="1970-03-01"), condition], None, TERMINOLOGY).entries("Condition")
    assert first[0].start == last[0].start is not None


def _matchers() -> list[CodeMatcher]:
    found = {id(vs.matcher): vs.matcher for cp in CAREPATHS for vs in cp.value_sets.values()}
    return list(found.values())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lookups_by_value_set_list_what_a_scan_of_every_entry_finds(seed: int) -> None:
    resources: list[dict[str, Any]] = sized_record(400)
    random.Random(seed).shuffle(resources)
    lazy = PatientRecord(resources, "p", TERMINOLOGY)
    eager = PatientRecord(resources, "p", TERMINOLOGY)
    everything = {t: eager.entries(t) for t in TYPES}
    for matcher in _matchers():
        for use_values in (True, False):
            got = [e.ref for e in lazy.entries_matching(TYPES, matcher, use_values)]
            codes = (lambda e: e.codes | e.value_codes) if use_values else (lambda e: e.codes)
            scanned = [e.ref for t in TYPES for e in everything[t] if any(matcher.matches(c) for c in codes(e))]
            assert got == scanned
    assert [e.ref for e in lazy.entries(*TYPES)] == [e.ref for t in TYPES for e in everything[t]]


def test_the_index_finds_the_members_a_matcher_tests_one_by_one() -> None:
    # The index answers a value set's prefixes by looking each one up among the record's codes by prefix;
    # that must find what ``CodeMatcher.matches`` finds, for the CarePath's value sets and for odd ones
    # (an empty prefix, a prefix with dots or longer than any code, an exclusion inside a prefix, a union).
    from fhir_mappings.code_index import CodeIndex
    from fhir_mappings.systems import ATC, ICD10CM

    record = PatientRecord(sized_record(1800), "p", TERMINOLOGY)
    index = CodeIndex.build([slot for of_type in record._slots.values() for slot in of_type])
    odd = [
        CodeMatcher(prefixes={ICD10CM: ("",)}),
        CodeMatcher(prefixes={ICD10CM: ("M54.", "M5", "Z9999999999")}),
        CodeMatcher(prefixes={ATC: ("N02", "M01A")}, excluded=frozenset({(ATC, "N02BA01")})),
        CodeMatcher.from_members([{"system": ICD10CM, "code": "M54", "match": "prefix"}]).union(
            CodeMatcher(prefixes={ATC: ("B01",)}, excluded=frozenset({(ATC, "B01AC06")}))
        ),
    ]
    everything = [slot for of_type in record._slots.values() for slot in of_type]
    for matcher in [*_matchers(), *odd]:
        for use_values in (True, False):
            got = index.positions(matcher, use_values, narrower=False)
            codes = (lambda s: s.codes | s.value_codes) if use_values else (lambda s: s.codes)
            scanned = {i for i, s in enumerate(everything) if any(matcher.matches(c) for c in codes(s))}
            assert got == scanned


def test_first_match_is_the_least_member_whatever_the_matcher() -> None:
    # first_match finds the least member by set intersection and a test of the prefixed systems' codes only;
    # it must name the code a walk of the sorted codes names, for every value set and odd matchers.
    from fhir_mappings.systems import ATC, ICD10CM

    record = PatientRecord(sized_record(1800), "p", TERMINOLOGY)
    code_sets = [slot.codes | slot.value_codes for of_type in record._slots.values() for slot in of_type]
    everything = frozenset().union(*code_sets)
    rng = random.Random(7)
    code_sets += [frozenset(rng.sample(sorted(everything), k)) for k in (2, 5, 20, 200) for _ in range(20)]
    odd = [
        CodeMatcher(
            exact=frozenset({(ICD10CM, "M54.2")}), prefixes={ICD10CM: ("M5",)}, excluded=frozenset({(ICD10CM, "M50.1")})
        ),
        CodeMatcher(prefixes={ATC: ("", "N02")}),
        CodeMatcher(others=(CodeMatcher(prefixes={ATC: ("B01",)}), CodeMatcher(exact=frozenset({(ICD10CM, "M54.2")})))),
    ]

    def walked(matcher: CodeMatcher, codes: frozenset[Any]) -> Any:
        return next((code for code in sorted(codes) if matcher.matches(code)), None)

    for matcher in [*_matchers(), *odd]:
        for codes in code_sets:
            assert matcher.first_match(codes) == walked(matcher, codes)
            assert matcher.first_match(list(codes)) == walked(matcher, codes)


def test_a_listed_status_reads_as_status_reading_reads_it() -> None:
    # The reader answers a status its type's rule lists from LISTED_READINGS; each answer must be
    # status_reading's, and a MedicationRequest that says doNotPerform is left to status_reading.
    from fhir_mappings.status import LISTED_READINGS, status_reading

    assert LISTED_READINGS
    for (rtype, status), reading in LISTED_READINGS.items():
        assert status_reading({"resourceType": rtype, "status": status}) == reading
        assert reading[0] != "ignored" or status != "entered-in-error"
    assert not {t for t, _ in LISTED_READINGS} & {"Condition", "AllergyIntolerance"}
    refused = b.patient(), {"resourceType": "MedicationRequest", "id": "m", "status": "active", "doNotPerform": True}
    record = PatientRecord(list(refused), None, TERMINOLOGY)
    assert record.ignored == ["MedicationRequest/m"]


def test_a_concept_of_the_usual_shape_reads_as_the_general_walk_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # read_concept and classes read a concept of JSON's usual shape without the general walk; the codes, the
    # unknown codings named (and their order) must be the general walk's, whatever the codings hold.
    from fhir_mappings import record as record_module

    icd, snomed, loinc = "http://hl7.org/fhir/sid/icd-10-cm", "http://snomed.info/sct", "http://loinc.org"
    codings = [
        {"system": icd, "code": "M54.2"},
        {"system": snomed, "code": "81680005"},
        {"system": loinc, "code": "72514-3"},
        {"system": LOCAL, "code": "X1"},
        {"system": LOCAL, "code": "X2", "display": "local"},
        {"system": LOCAL, "code": "X3"},
        {"system": "urn:oid:9.8.7", "code": "X1"},
        {"system": "", "code": "M54.2"},
        {"code": "M54.2"},
        {"system": icd, "code": " "},
        {"system": icd},
        {"display": "text only"},
        {"system": 7, "code": "M54.2"},
        {"system": icd, "code": 12},
        {},
        "not a coding",
    ]
    rng = random.Random(11)
    concepts: list[Any] = [None, {}, {"coding": []}, {"coding": "x"}, [], [{}], "text"]
    unknown = [c for c in codings if isinstance(c, dict) and str(c.get("system", "")).startswith("urn:")]
    for _ in range(20):  # several codings none of which is known: each is named, in the general walk's order
        concepts.append({"coding": rng.sample(unknown, rng.randint(2, len(unknown)))})
    for _ in range(400):
        picked = [rng.choice(codings) for _ in range(rng.randint(1, 4))]
        concept = {"coding": picked, "text": "t"}
        concepts += [concept, [concept], [concept, {"coding": [rng.choice(codings)]}]]
    record = PatientRecord([], None, TERMINOLOGY)
    fast = [(record.read_concept(c), record.classes(c)) for c in concepts]
    monkeypatch.setattr(record_module, "_plain_keys", lambda concept: record_module._MANY)
    general = PatientRecord([], None, TERMINOLOGY)
    assert fast == [(general.read_concept(c), general.classes(c)) for c in concepts]
