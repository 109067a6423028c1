"""The shape catalogue: one clinical finding, written the ways real EHRs write it.

Epic, Oracle Health, athenahealth and US Core servers send the same fact in
different shapes: ICD-10 with or without the dot, under an OID, beside a local
code or a SNOMED concept; a drug as an ingredient, an SCD/SBD product, an NDC,
behind a ``medicationReference``; a lab as ``valueQuantity``, ``valueInteger``,
a numeric string or a panel component. Each shape here is a small function
``(finding) -> resources`` (``None`` when it does not apply to that finding),
registered under a name such as ``medication:scd-product-via-contained-reference``
so that a failing check names it.

Two families:

* **injection shapes** (:data:`SHAPES`) write a finding that makes a
  non-indication present, in an *understood* shape (the service must see it) or a
  *not understood* one (local code only, text only, an unknown product, an
  unknown status, an unresolved reference, a provisional Condition, a
  preliminary lab: the service must say "unknown"). Either way the order must not
  be auto-approved, so the flag ``understood`` is for the report only.
* **re-encodings** (:data:`REENCODINGS`) rewrite a scenario's existing record in
  an alternative understood shape; the decision must not change.

Codes the CarePath does not list (RxNorm products, NDCs, SNOMED equivalents of
ICD-10-CM codes) come from ``fhir_mappings.terminology.load_terminology()`` when
that module exists, else from the small fallback tables below (test data only).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

Resource = dict[str, Any]

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
ICD10CM_OID = "urn:oid:2.16.840.1.113883.6.90"
ICD10_OID = "urn:oid:2.16.840.1.113883.6.3"
SNOMED = "http://snomed.info/sct"
SNOMED_OID = "urn:oid:2.16.840.1.113883.6.96"
LOINC = "http://loinc.org"
LOINC_OID = "urn:oid:2.16.840.1.113883.6.1"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
RXNORM_OID = "urn:oid:2.16.840.1.113883.6.88"
NDC = "http://hl7.org/fhir/sid/ndc"
CPT = "http://www.ama-assn.org/go/cpt"
CPT_OID = "urn:oid:2.16.840.1.113883.6.12"
UCUM = "http://unitsofmeasure.org"
# Local code systems as Epic and Oracle Health (Cerner) spell them.
EPIC_DX = "urn:oid:1.2.840.114350.1.13.0.1.7.2.696580"
EPIC_MED = "urn:oid:1.2.840.114350.1.13.0.1.7.2.698288"
EPIC_LAB = "urn:oid:1.2.840.114350.1.13.0.1.7.2.768282"
CERNER_LOCAL = "https://fhir.cerner.com/ec2458f2-1e24-41c8-b71b-0e701af7583d/codeSet/72"

CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VER = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


# --- terminology: product codes and equivalents the CarePath does not list -------------------

# Test fallback only (used while cds_server/terminology/terminology.json has not landed).
# RxNorm ingredient -> [(system, product code, display)]: SCD, SBD and an NDC package.
FALLBACK_PRODUCTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "1364430": (  # apixaban
        (RXNORM, "1364445", "apixaban 5 MG Oral Tablet"),
        (RXNORM, "1364447", "apixaban 5 MG Oral Tablet [Eliquis]"),
        (NDC, "0003-0894-21", "Eliquis 5 MG Oral Tablet"),
    ),
    "11289": (  # warfarin
        (RXNORM, "855332", "warfarin sodium 5 MG Oral Tablet"),
        (RXNORM, "855334", "warfarin sodium 5 MG Oral Tablet [Coumadin]"),
    ),
    "32968": (  # clopidogrel
        (RXNORM, "309362", "clopidogrel 75 MG Oral Tablet"),
        (RXNORM, "213169", "clopidogrel 75 MG Oral Tablet [Plavix]"),
    ),
}
# ICD-10-CM -> an equivalent SNOMED CT finding.
FALLBACK_SNOMED_FOR_ICD10: dict[str, tuple[str, str]] = {
    "M54.2": ("81680005", "Neck pain"),
    "D66": ("28293008", "Hereditary factor VIII deficiency disease"),
    "A41.9": ("91302008", "Sepsis"),
    "Z33.1": ("77386006", "Pregnancy"),
    "R32": ("165232002", "Urinary incontinence"),
    "R26.81": ("394616008", "Unsteady when walking"),
    "Z91.041": ("293637006", "Allergy to contrast media"),
    "D65": ("67406007", "Disseminated intravascular coagulation"),
    "R26.0": ("25136009", "Ataxic gait"),
}


@dataclass(frozen=True)
class Terminology:
    """What the shapes need from terminology: products of an ingredient, SNOMED for an ICD-10-CM code."""

    products: Mapping[str, tuple[tuple[str, str, str], ...]]
    snomed_for_icd10: Mapping[str, tuple[str, str]]
    source: str


def load_terminology() -> Terminology:
    """Products and SNOMED equivalents from the service's terminology file, on top of the fallback tables.

    Read from the data file itself (the loaded object keeps no displays): every product of an
    ingredient the CarePath lists, and every SNOMED concept mapped to an ICD-10-CM code.
    """
    import json

    from cds_server.carepath_store import DEFAULT_TERMINOLOGY

    doc = json.loads(DEFAULT_TERMINOLOGY.read_text(encoding="utf-8"))
    products: dict[str, tuple[tuple[str, str, str], ...]] = dict(FALLBACK_PRODUCTS)
    for product in doc["products"]:
        if len(product["ingredients"]) == 1:
            ingredient = product["ingredients"][0]
            found = products.get(ingredient, ())
            if len(found) < 3:
                products[ingredient] = (*found, (RXNORM, product["code"], product["display"]))
    # Only one-to-one maps are equivalents: when several SNOMED concepts classify to one ICD-10-CM code
    # (hyperreflexia and Hoffmann sign both to R29.2), each is narrower than the code, not the same finding.
    sources: dict[str, list[tuple[str, str]]] = {}
    for row in doc["maps"]:
        for target in row["to"]:
            sources.setdefault(target["code"], []).append((row["from"]["code"], row["from"].get("display", "")))
    snomed = dict(FALLBACK_SNOMED_FOR_ICD10)
    for code, found in sources.items():
        if len(found) == 1:
            snomed.setdefault(code, found[0])
    return Terminology(products, snomed, "cds_server/terminology/terminology.json (+ fallback)")


TERMINOLOGY = load_terminology()


# --- the finding to write ---------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One fact that makes a non-indication present, before it is given a shape.

    ``kind`` is ``coded`` (Condition, Observation, Procedure, Device, AllergyIntolerance),
    ``medication`` (an active drug of the class), ``lab`` (a value beyond the threshold)
    or ``result`` (an Observation whose coded value is positive).
    """

    kind: str
    system: str
    code: str
    display: str
    resource_types: tuple[str, ...]
    patient: str
    as_of: date
    lookback_days: int | None = None
    value: float = 0.0
    unit: str = ""
    alt_units: tuple[tuple[str, float], ...] = ()
    comparator: str = ""
    value_system: str = ""
    value_code: str = ""
    value_display: str = ""


Builder = Callable[[Finding], list[Resource] | None]


@dataclass(frozen=True)
class Shape:
    """A named way of writing a finding."""

    name: str
    build: Builder = field(repr=False)
    understood: bool = True


SHAPES: list[Shape] = []


def _register(name: str, build: Builder, understood: bool = True) -> None:
    assert name not in {s.name for s in SHAPES}, name
    SHAPES.append(Shape(name, build, understood))


# --- small helpers ---------------------------------------------------------------------


def _id(finding: Finding, tag: str) -> str:
    """Ids sort after the scenario's own ("zz-"), so an injected lab dated as-of is the latest."""
    return f"zz-{tag}-{finding.code}".replace(".", "").replace(" ", "")[:64]


def _day(finding: Finding, days_before: int = 0) -> str:
    return (finding.as_of - timedelta(days=days_before)).isoformat()


def _tz(finding: Finding, days_before: int = 0) -> str:
    return f"{_day(finding, days_before)}T09:30:00-05:00"


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _concept(*codings: Mapping[str, str], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [dict(c) for c in codings]}
    if text:
        out["text"] = text
    return out


def _cc(system: str, code: str, display: str = "") -> dict[str, Any]:
    return _concept(_coding(system, code, display or None))


def _canonical(finding: Finding) -> dict[str, Any]:
    return _concept(_coding(finding.system, finding.code, finding.display), text=finding.display)


def _snomed_equivalent(finding: Finding) -> tuple[str, str] | None:
    if finding.system != ICD10CM:
        return None
    return TERMINOLOGY.snomed_for_icd10.get(finding.code)


# --- coding variants: (finding) -> CodeableConcept | None --------------------------------

ConceptFn = Callable[[Finding], dict[str, Any] | None]


def _only(system: str) -> Callable[[ConceptFn], ConceptFn]:
    def wrap(fn: ConceptFn) -> ConceptFn:
        def inner(f: Finding) -> dict[str, Any] | None:
            return fn(f) if f.system == system else None

        inner.__name__ = fn.__name__
        return inner

    return wrap


def canonical(f: Finding) -> dict[str, Any]:
    return _canonical(f)


@_only(ICD10CM)
def icd10cm_undotted(f: Finding) -> dict[str, Any]:
    return _cc(ICD10CM, f.code.replace(".", ""), f.display)


@_only(ICD10CM)
def icd10cm_lowercase_undotted(f: Finding) -> dict[str, Any]:
    return _cc(ICD10CM, f.code.replace(".", "").lower(), f.display)


@_only(ICD10CM)
def icd10_who_uri(f: Finding) -> dict[str, Any]:
    return _cc(ICD10_WHO, f.code, f.display)


@_only(ICD10CM)
def icd10cm_oid(f: Finding) -> dict[str, Any]:
    return _cc(ICD10CM_OID, f.code.replace(".", ""), f.display)


@_only(ICD10CM)
def icd10_who_oid(f: Finding) -> dict[str, Any]:
    return _cc(ICD10_OID, f.code, f.display)


def snomed_equivalent_only(f: Finding) -> dict[str, Any] | None:
    eq = _snomed_equivalent(f)
    return _cc(SNOMED, *eq) if eq else None


def icd10cm_with_snomed(f: Finding) -> dict[str, Any] | None:
    eq = _snomed_equivalent(f)
    return _concept(_coding(SNOMED, *eq), _coding(f.system, f.code, f.display)) if eq else None


def with_epic_local(f: Finding) -> dict[str, Any]:
    """Epic sends its own code first, the standard one beside it."""
    local = {ICD10CM: EPIC_DX, LOINC: EPIC_LAB, RXNORM: EPIC_MED}.get(f.system, EPIC_DX)
    return _concept(_coding(local, "140234", f.display), _coding(f.system, f.code, f.display), text=f.display)


def with_cerner_local(f: Finding) -> dict[str, Any]:
    return _concept(_coding(f.system, f.code), _coding(CERNER_LOCAL, "2820789", f.display.upper()))


@_only(SNOMED)
def snomed_oid(f: Finding) -> dict[str, Any]:
    return _cc(SNOMED_OID, f.code, f.display)


@_only(SNOMED)
def snomed_trailing_slash(f: Finding) -> dict[str, Any]:
    return _cc(SNOMED + "/", f.code, f.display)


@_only(LOINC)
def loinc_oid(f: Finding) -> dict[str, Any]:
    return _cc(LOINC_OID, f.code, f.display)


@_only(RXNORM)
def rxnorm_oid(f: Finding) -> dict[str, Any]:
    return _cc(RXNORM_OID, f.code, f.display)


@_only(CPT)
def cpt_oid(f: Finding) -> dict[str, Any]:
    return _cc(CPT_OID, f.code, f.display)


def local_code_only(f: Finding) -> dict[str, Any]:
    return _concept(_coding(EPIC_DX, "140234", f.display), text=f.display)


def text_only(f: Finding) -> dict[str, Any]:
    return {"text": f.display}


def display_only_coding(f: Finding) -> dict[str, Any]:
    return {"coding": [{"display": f.display}], "text": f.display}


def code_without_system(f: Finding) -> dict[str, Any]:
    return {"coding": [{"code": f.code, "display": f.display}]}


UNDERSTOOD_CONCEPTS: tuple[ConceptFn, ...] = (
    canonical,
    icd10cm_undotted,
    icd10cm_lowercase_undotted,
    icd10_who_uri,
    icd10cm_oid,
    icd10_who_oid,
    snomed_equivalent_only,
    icd10cm_with_snomed,
    with_epic_local,
    with_cerner_local,
    snomed_oid,
    snomed_trailing_slash,
    loinc_oid,
    rxnorm_oid,
    cpt_oid,
)
UNREAD_CONCEPTS: tuple[ConceptFn, ...] = (local_code_only, text_only, display_only_coding, code_without_system)


# --- resources of each type: (finding, concept) -> resource -------------------------------


def _base(f: Finding, rtype: str, tag: str) -> Resource:
    key = "patient" if rtype in ("AllergyIntolerance", "Device") else "subject"
    return {"resourceType": rtype, "id": _id(f, tag), key: {"reference": f.patient}}


def condition(f: Finding, concept: Mapping[str, Any], tag: str, **extra: Any) -> Resource:
    res = _base(f, "Condition", tag)
    res.update(
        {
            "clinicalStatus": _cc(CONDITION_CLINICAL, "active"),
            "verificationStatus": _cc(CONDITION_VER, "confirmed"),
            "category": [_cc(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")],
            "code": dict(concept),
            "onsetDateTime": _day(f),
            "recordedDate": _day(f),
        }
    )
    return _apply(res, extra)


def observation(f: Finding, concept: Mapping[str, Any], tag: str, **extra: Any) -> Resource:
    res = _base(f, "Observation", tag)
    category = "laboratory" if f.kind in ("lab", "result") else "exam"
    res.update(
        {
            "status": "final",
            "category": [_cc(OBS_CATEGORY, category)],
            "code": dict(concept),
            "effectiveDateTime": _day(f),
            "issued": f"{_day(f)}T10:00:00Z",
        }
    )
    if f.kind == "lab":
        res["valueQuantity"] = {"value": f.value, "unit": f.unit, "system": UCUM, "code": f.unit}
    elif f.kind == "result":
        res["valueCodeableConcept"] = _cc(f.value_system, f.value_code, f.value_display)
    return _apply(res, extra)


def procedure(f: Finding, concept: Mapping[str, Any], tag: str, **extra: Any) -> Resource:
    res = _base(f, "Procedure", tag)
    res.update({"status": "completed", "code": dict(concept), "performedDateTime": _day(f, 400)})
    return _apply(res, extra)


def device(f: Finding, concept: Mapping[str, Any], tag: str, **extra: Any) -> Resource:
    res = _base(f, "Device", tag)
    res.update({"status": "active", "deviceName": [{"name": f.display, "type": "user-friendly-name"}]})
    if "Thesaurus" in f.system:  # MR-safety labelling (NCIt) lives in Device.safety
        res["safety"] = [dict(concept)]
    else:
        res["type"] = dict(concept)
    return _apply(res, extra)


def allergy(f: Finding, concept: Mapping[str, Any], tag: str, **extra: Any) -> Resource:
    res = _base(f, "AllergyIntolerance", tag)
    res.update(
        {
            "clinicalStatus": _cc(ALLERGY_CLINICAL, "active"),
            "verificationStatus": _cc(ALLERGY_VER, "confirmed"),
            "type": "allergy",
            "category": ["medication"],
            "criticality": "high",
            "code": dict(concept),
            "recordedDate": _day(f, 200),
        }
    )
    return _apply(res, extra)


RESOURCE_BUILDERS: dict[str, Callable[..., Resource]] = {
    "Condition": condition,
    "Observation": observation,
    "Procedure": procedure,
    "Device": device,
    "AllergyIntolerance": allergy,
}
_DROP = object()


def _apply(res: Resource, extra: Mapping[str, Any]) -> Resource:
    for key, value in extra.items():
        if value is _DROP:
            res.pop(key, None)
        else:
            res[key] = value
    return res


# --- coded findings: every coding variant in every resource type the leaf reads -----------


def _coded_concept_shape(rtype: str, fn: ConceptFn) -> Builder:
    def build(f: Finding) -> list[Resource] | None:
        if f.kind != "coded" or rtype not in f.resource_types:
            return None
        concept = fn(f)
        return None if concept is None else [RESOURCE_BUILDERS[rtype](f, concept, fn.__name__[:20])]

    return build


for _rtype in RESOURCE_BUILDERS:
    for _fn in UNDERSTOOD_CONCEPTS:
        _register(f"{_rtype.lower()}:{_fn.__name__.replace('_', '-')}", _coded_concept_shape(_rtype, _fn))
    for _fn in UNREAD_CONCEPTS:
        _register(f"{_rtype.lower()}:{_fn.__name__.replace('_', '-')}", _coded_concept_shape(_rtype, _fn), False)


def _variant(rtype: str, name: str, understood: bool = True, **extra: Any) -> None:
    """Register a status/date/value variant of the canonical resource of one type."""

    def build(f: Finding) -> list[Resource] | None:
        if f.kind != "coded" or rtype not in f.resource_types:
            return None
        resolved = {k: (v(f) if callable(v) else v) for k, v in extra.items()}
        if any(v is None for v in resolved.values()):
            return None
        return [RESOURCE_BUILDERS[rtype](f, _canonical(f), name[:20], **resolved)]

    _register(f"{rtype.lower()}:{name}", build, understood)


def _years_ago(years: int) -> Callable[[Finding], str]:
    return lambda f: f.as_of.replace(year=f.as_of.year - years, day=1).isoformat()


def _when_lookback(value: Callable[[Finding], Any]) -> Callable[[Finding], Any]:
    return lambda f: value(f) if f.lookback_days is not None else None


# Conditions: every counting status, every onset shape (an active Condition counts however old).
_variant("Condition", "clinical-recurrence", clinicalStatus=_cc(CONDITION_CLINICAL, "recurrence"))
_variant("Condition", "clinical-relapse", clinicalStatus=_cc(CONDITION_CLINICAL, "relapse"))
_variant("Condition", "no-clinical-status-not-abated", clinicalStatus=_DROP)
_variant("Condition", "no-verification-status", verificationStatus=_DROP)
_variant("Condition", "encounter-diagnosis", category=[_cc(CONDITION_CATEGORY, "encounter-diagnosis")])
_variant(
    "Condition",
    "health-concern",
    category=[_cc("http://hl7.org/fhir/us/core/CodeSystem/condition-category", "health-concern")],
)
_variant("Condition", "active-onset-10-years-ago", onsetDateTime=_years_ago(10), recordedDate=_years_ago(10))
_variant("Condition", "onset-datetime-with-timezone", onsetDateTime=lambda f: _tz(f, 3))
_variant("Condition", "onset-year-only", onsetDateTime=lambda f: str(f.as_of.year), recordedDate=_DROP)
_variant("Condition", "onset-year-month", onsetDateTime=lambda f: f.as_of.isoformat()[:7], recordedDate=_DROP)
_variant(
    "Condition", "onset-age", onsetDateTime=_DROP, onsetAge={"value": 40, "unit": "years", "system": UCUM, "code": "a"}
)
_variant("Condition", "onset-string", onsetDateTime=_DROP, onsetString="since childhood")
_variant("Condition", "onset-period", onsetDateTime=_DROP, onsetPeriod=lambda f: {"start": _day(f)})
_variant("Condition", "recorded-date-only", onsetDateTime=_DROP)
_variant("Condition", "no-dates", onsetDateTime=_DROP, recordedDate=_DROP)
_variant(
    "Condition",
    "resolved-inside-lookback",
    clinicalStatus=_cc(CONDITION_CLINICAL, "resolved"),
    onsetDateTime=_when_lookback(lambda f: _day(f, 400)),
    abatementDateTime=lambda f: _day(f, 2),
)
_variant(
    "Condition",
    "resolved-abatement-year-month",
    clinicalStatus=_cc(CONDITION_CLINICAL, "resolved"),
    onsetDateTime=_when_lookback(lambda f: _day(f, 400)),
    abatementDateTime=lambda f: f.as_of.isoformat()[:7],
)
_variant("Condition", "provisional", False, verificationStatus=_cc(CONDITION_VER, "provisional"))
_variant("Condition", "differential", False, verificationStatus=_cc(CONDITION_VER, "differential"))
_variant("Condition", "unconfirmed", False, verificationStatus=_cc(CONDITION_VER, "unconfirmed"))
_variant("Condition", "unknown-clinical-status", False, clinicalStatus=_cc(CONDITION_CLINICAL, "flare"))
_variant("Condition", "clinical-status-text-only", False, clinicalStatus={"text": "Active"})

# Observations of a finding (exam findings, flowsheet rows).
_variant("Observation", "status-amended", status="amended")
_variant("Observation", "status-corrected", status="corrected")
_variant("Observation", "value-boolean-true", valueBoolean=True)
_variant("Observation", "value-present", valueCodeableConcept=_cc(SNOMED, "52101004", "Present"))
_variant("Observation", "value-positive", valueCodeableConcept=_cc(SNOMED, "10828004", "Positive"))
_variant("Observation", "effective-with-timezone", effectiveDateTime=lambda f: _tz(f))
_variant("Observation", "effective-period", effectiveDateTime=_DROP, effectivePeriod=lambda f: {"start": _tz(f, 1)})
_variant("Observation", "issued-only", effectiveDateTime=_DROP)
_variant("Observation", "effective-year-month", effectiveDateTime=lambda f: f.as_of.isoformat()[:7], issued=_DROP)
_variant("Observation", "preliminary", False, status="preliminary")
_variant("Observation", "unknown-status", False, status="F")


def observation_finding_as_value(f: Finding) -> list[Resource] | None:
    """Epic flowsheets: the row is the code, the finding is the value."""
    if f.kind != "coded" or "Observation" not in f.resource_types:
        return None
    concept = _cc(LOINC, "29545-1", "Physical findings")
    return [observation(f, concept, "as-value", valueCodeableConcept=_canonical(f))]


_register("observation:finding-as-value", observation_finding_as_value)

# Procedures, devices, allergies.
_variant("Procedure", "performed-period", performedDateTime=_DROP, performedPeriod=lambda f: {"start": _day(f, 400)})
_variant("Procedure", "performed-year-only", performedDateTime=lambda f: str(f.as_of.year - 1))
_variant("Procedure", "unknown-status", False, status="done")
_variant("Device", "no-status", status=_DROP)
_variant("Device", "unknown-status", False, status="implanted")
_variant("AllergyIntolerance", "no-clinical-status", clinicalStatus=_DROP)
_variant("AllergyIntolerance", "no-verification-status", verificationStatus=_DROP)
_variant("AllergyIntolerance", "intolerance", type="intolerance", criticality="low")
_variant("AllergyIntolerance", "unconfirmed", False, verificationStatus=_cc(ALLERGY_VER, "unconfirmed"))
_variant("AllergyIntolerance", "unknown-clinical-status", False, clinicalStatus=_cc(ALLERGY_CLINICAL, "current"))


def allergy_reaction_substance(f: Finding) -> list[Resource] | None:
    """The allergen only in reaction.substance (code is free text)."""
    if f.kind != "coded" or "AllergyIntolerance" not in f.resource_types:
        return None
    reaction = [{"substance": _canonical(f), "manifestation": [_cc(SNOMED, "247472004", "Hives")]}]
    return [allergy(f, {"text": f.display}, "reaction", reaction=reaction)]


_register("allergyintolerance:reaction-substance", allergy_reaction_substance)


# --- medications: products, references, statuses ------------------------------------------


def _products(f: Finding, system: str, index: int = 0) -> tuple[str, str, str] | None:
    found = [p for p in TERMINOLOGY.products.get(f.code, ()) if p[0] == system]
    return found[index] if len(found) > index else None


def _med_request(f: Finding, tag: str, **extra: Any) -> Resource:
    res = {
        "resourceType": "MedicationRequest",
        "id": _id(f, tag),
        "status": "active",
        "intent": "order",
        "subject": {"reference": f.patient},
        "medicationCodeableConcept": _canonical(f),
        "authoredOn": _day(f, 30),
        "dosageInstruction": [{"text": "1 tablet by mouth twice daily", "route": _cc(SNOMED, "26643006", "Oral")}],
    }
    return _apply(res, extra)


def _med_statement(f: Finding, tag: str, **extra: Any) -> Resource:
    res = {
        "resourceType": "MedicationStatement",
        "id": _id(f, tag),
        "status": "active",
        "subject": {"reference": f.patient},
        "medicationCodeableConcept": _canonical(f),
        "effectivePeriod": {"start": _day(f, 60)},
        "dateAsserted": _day(f, 1),
    }
    return _apply(res, extra)


def _medication(f: Finding, mid: str, concept: Mapping[str, Any], **extra: Any) -> Resource:
    return _apply({"resourceType": "Medication", "id": mid, "code": dict(concept)}, extra)


def _med_concept_shape(fn: Callable[[Finding], dict[str, Any] | None], name: str, understood: bool = True) -> None:
    def build(f: Finding) -> list[Resource] | None:
        if f.kind != "medication":
            return None
        concept = fn(f)
        return None if concept is None else [_med_request(f, name[:20], medicationCodeableConcept=concept)]

    _register(f"medication:{name}", build, understood)


def _product_concept(system: str, index: int = 0) -> Callable[[Finding], dict[str, Any] | None]:
    def fn(f: Finding) -> dict[str, Any] | None:
        p = _products(f, system, index)
        return _cc(*p) if p else None

    return fn


_med_concept_shape(rxnorm_oid, "rxnorm-ingredient-oid")
_med_concept_shape(with_epic_local, "ingredient-with-epic-local")
_med_concept_shape(_product_concept(RXNORM, 0), "scd-product")
_med_concept_shape(_product_concept(RXNORM, 1), "sbd-product")
_med_concept_shape(_product_concept(NDC, 0), "ndc")
_med_concept_shape(
    lambda f: (lambda p: _concept(_coding(EPIC_MED, "4471", p[2]), _coding(*p)) if p else None)(_products(f, RXNORM)),
    "scd-product-with-epic-local",
)
_med_concept_shape(local_code_only, "local-code-only", False)
_med_concept_shape(text_only, "text-only", False)
_med_concept_shape(lambda f: _cc(RXNORM, "99999917"), "unknown-rxnorm-product-no-display", False)


def _scd_or_ingredient(f: Finding) -> dict[str, Any]:
    p = _products(f, RXNORM)
    return _cc(*p) if p else _canonical(f)


def med_contained_reference(f: Finding) -> list[Resource] | None:
    if f.kind != "medication":
        return None
    req = _med_request(f, "contained", medicationCodeableConcept=_DROP, medicationReference={"reference": "#m1"})
    req["contained"] = [_medication(f, "m1", _canonical(f))]
    return [req]


def med_scd_product_via_contained_reference(f: Finding) -> list[Resource] | None:
    if f.kind != "medication" or _products(f, RXNORM) is None:
        return None
    req = _med_request(f, "scd-contained", medicationCodeableConcept=_DROP, medicationReference={"reference": "#m1"})
    req["contained"] = [_medication(f, "m1", _scd_or_ingredient(f))]
    return [req]


def med_contained_with_ingredients(f: Finding) -> list[Resource] | None:
    """Oracle Health: a contained compound Medication, text code, ingredients coded."""
    if f.kind != "medication":
        return None
    req = _med_request(f, "contained-ingr", medicationCodeableConcept=_DROP, medicationReference={"reference": "#m1"})
    ingredient = [{"itemCodeableConcept": _canonical(f), "isActive": True}]
    req["contained"] = [_medication(f, "m1", {"text": f.display}, ingredient=ingredient)]
    return [req]


def _med_entry(f: Finding, before: bool, ref: str | None = None, product: bool = False) -> list[Resource] | None:
    if f.kind != "medication" or (product and _products(f, RXNORM) is None):
        return None
    mid = _id(f, "med")
    med = _medication(f, mid, _scd_or_ingredient(f) if product else _canonical(f))
    req = _med_request(
        f, "ref-entry", medicationCodeableConcept=_DROP, medicationReference={"reference": ref or f"Medication/{mid}"}
    )
    return [med, req] if before else [req, med]


def med_entry_before(f: Finding) -> list[Resource] | None:
    return _med_entry(f, True)


def med_entry_after(f: Finding) -> list[Resource] | None:
    return _med_entry(f, False)


def med_scd_product_via_entry_after(f: Finding) -> list[Resource] | None:
    return _med_entry(f, False, product=True)


def med_entry_absolute_url(f: Finding) -> list[Resource] | None:
    return _med_entry(f, False, f"https://fhir.ehr.example/R4/Medication/{_id(f, 'med')}")


def med_statement_contained(f: Finding) -> list[Resource] | None:
    if f.kind != "medication":
        return None
    st = _med_statement(f, "st-contained", medicationCodeableConcept=_DROP, medicationReference={"reference": "#m1"})
    st["contained"] = [_medication(f, "m1", _canonical(f))]
    return [st]


def med_unresolved_reference(f: Finding) -> list[Resource] | None:
    if f.kind != "medication":
        return None
    ref = {"reference": "Medication/not-in-prefetch", "display": "apixaban 5 MG Oral Tablet"}
    return [_med_request(f, "unresolved", medicationCodeableConcept=_DROP, medicationReference=ref)]


def med_unresolved_contained(f: Finding) -> list[Resource] | None:
    if f.kind != "medication":
        return None
    return [_med_request(f, "bad-contained", medicationCodeableConcept=_DROP, medicationReference={"reference": "#m9"})]


def med_reference_display_only(f: Finding) -> list[Resource] | None:
    if f.kind != "medication":
        return None
    ref = {"display": f.display}
    return [_med_request(f, "display-ref", medicationCodeableConcept=_DROP, medicationReference=ref)]


for _fn2, _ok in (
    (med_contained_reference, True),
    (med_scd_product_via_contained_reference, True),
    (med_scd_product_via_entry_after, True),
    (med_contained_with_ingredients, True),
    (med_entry_before, True),
    (med_entry_after, True),
    (med_entry_absolute_url, True),
    (med_statement_contained, True),
    (med_unresolved_reference, False),
    (med_unresolved_contained, False),
    (med_reference_display_only, False),
):
    _register("medication:" + _fn2.__name__.removeprefix("med_").replace("_", "-"), _fn2, _ok)


def _med_status(name: str, maker: Callable[..., Resource], understood: bool = True, **extra: Any) -> None:
    def build(f: Finding) -> list[Resource] | None:
        if f.kind != "medication":
            return None
        return [maker(f, name[:20], **{k: (v(f) if callable(v) else v) for k, v in extra.items()})]

    _register(f"medication:{name}", build, understood)


_med_status("request-on-hold", _med_request, status="on-hold")
_med_status(
    "request-completed-recent",
    _med_request,
    status="completed",
    authoredOn=lambda f: _day(f, 40),
    dispenseRequest=lambda f: {"validityPeriod": {"start": _day(f, 40), "end": _day(f, 3)}},
)
_med_status(
    "request-stopped-recent",
    _med_request,
    status="stopped",
    authoredOn=lambda f: _day(f, 40),
    dispenseRequest=lambda f: {"validityPeriod": {"start": _day(f, 40), "end": _day(f, 5)}},
)
_med_status("request-authored-with-timezone", _med_request, authoredOn=lambda f: _tz(f, 30))
_med_status(
    "request-authored-year-month", _med_request, status="completed", authoredOn=lambda f: f.as_of.isoformat()[:7]
)
_med_status("statement-active", _med_statement)
_med_status(
    "statement-completed-recent",
    _med_statement,
    status="completed",
    effectivePeriod=lambda f: {"start": _day(f, 60), "end": _day(f, 4)},
)
_med_status(
    "statement-stopped-recent",
    _med_statement,
    status="stopped",
    effectivePeriod=lambda f: {"start": _day(f, 60), "end": _day(f, 4)},
)
_med_status("statement-on-hold", _med_statement, status="on-hold")
_med_status(
    "statement-completed-end-year-month",
    _med_statement,
    status="completed",
    effectivePeriod=lambda f: {"start": _day(f, 90), "end": f.as_of.isoformat()[:7]},
)
_med_status(
    "statement-effective-datetime", _med_statement, effectivePeriod=_DROP, effectiveDateTime=lambda f: _tz(f, 2)
)
_med_status("request-unknown-status", _med_request, False, status="suspended")
_med_status("statement-unknown-status", _med_statement, False, status="taking")


def med_dispense_recent_product(f: Finding) -> list[Resource] | None:
    if f.kind != "medication":
        return None
    res = {
        "resourceType": "MedicationDispense",
        "id": _id(f, "dispense"),
        "status": "completed",
        "subject": {"reference": f.patient},
        "medicationCodeableConcept": _scd_or_ingredient(f),
        "whenHandedOver": _tz(f, 10),
        "daysSupply": {"value": 30, "unit": "days", "system": UCUM, "code": "d"},
    }
    return [res]


def med_administration_recent(f: Finding) -> list[Resource] | None:
    if f.kind != "medication":
        return None
    res = {
        "resourceType": "MedicationAdministration",
        "id": _id(f, "admin"),
        "status": "completed",
        "subject": {"reference": f.patient},
        "medicationCodeableConcept": _canonical(f),
        "effectiveDateTime": _tz(f, 2),
    }
    return [res]


_register("medication:dispense-recent-product", med_dispense_recent_product)


def med_dispense_recent(f: Finding) -> list[Resource] | None:
    built = med_dispense_recent_product(f)
    if built:
        built[0]["medicationCodeableConcept"] = _canonical(f)
        built[0]["id"] = _id(f, "dispense-ingr")
    return built


_register("medication:dispense-recent", med_dispense_recent)
_register("medication:administration-recent", med_administration_recent)


# --- labs: value shapes, units, statuses -------------------------------------------------


def _lab_shape(name: str, understood: bool = True, kinds: tuple[str, ...] = ("lab",), **extra: Any) -> None:
    def build(f: Finding) -> list[Resource] | None:
        if f.kind not in kinds:
            return None
        resolved = {k: (v(f) if callable(v) else v) for k, v in extra.items()}
        if any(v is None for v in resolved.values()):
            return None
        return [observation(f, _canonical(f), name[:20], **resolved)]

    _register(f"{'lab' if kinds == ('lab',) else 'result'}:{name}", build, understood)


def _lab_concept_shape(fn: ConceptFn, kind: str, understood: bool = True) -> None:
    def build(f: Finding) -> list[Resource] | None:
        if f.kind != kind:
            return None
        concept = fn(f)
        return None if concept is None else [observation(f, concept, fn.__name__[:20])]

    _register(f"{kind}:{fn.__name__.replace('_', '-')}", build, understood)


for _kind in ("lab", "result"):
    for _fn in (loinc_oid, with_epic_local, with_cerner_local):
        _lab_concept_shape(_fn, _kind)
    for _fn in (local_code_only, text_only):
        _lab_concept_shape(_fn, _kind, False)


def _integral(f: Finding) -> int | None:
    return int(f.value) if float(f.value).is_integer() else None


_lab_shape("value-quantity-unit-text-only", valueQuantity=lambda f: {"value": f.value, "unit": f.unit})
_lab_shape("value-quantity-no-unit", valueQuantity=lambda f: {"value": f.value})
_lab_shape("value-integer", valueQuantity=_DROP, valueInteger=_integral)
_lab_shape("value-string-numeric", valueQuantity=_DROP, valueString=lambda f: f"{f.value:g}")
_lab_shape(
    "value-quantity-comparator",
    valueQuantity=lambda f: {
        "value": f.value,
        "comparator": ">" if f.comparator.startswith(">") else "<",
        "unit": f.unit,
        "system": UCUM,
        "code": f.unit,
    },
)
_lab_shape("status-amended", status="amended")
_lab_shape("status-corrected", status="corrected")
_lab_shape("effective-with-timezone", effectiveDateTime=lambda f: _tz(f))
_lab_shape("effective-utc-instant", effectiveDateTime=lambda f: f"{_day(f)}T14:30:00Z")
_lab_shape("effective-period", effectiveDateTime=_DROP, effectivePeriod=lambda f: {"start": _tz(f), "end": _tz(f)})
_lab_shape("issued-only", effectiveDateTime=_DROP)
_lab_shape("effective-year-month", effectiveDateTime=lambda f: f.as_of.isoformat()[:7], issued=_DROP)
_lab_shape(
    "interpretation-critical",
    interpretation=lambda f: [_cc(INTERPRETATION, "HH" if f.comparator.startswith(">") else "LL", "Critical")],
)
_lab_shape("preliminary", False, status="preliminary")
_lab_shape("unknown-status", False, status="F")
_lab_shape("value-string-not-numeric", False, valueQuantity=_DROP, valueString=lambda f: "see report")
_lab_shape(
    "interpretation-only-no-value", False, valueQuantity=_DROP, interpretation=lambda f: [_cc(INTERPRETATION, "A")]
)


def lab_alt_unit(index: int) -> Builder:
    def build(f: Finding) -> list[Resource] | None:
        if f.kind != "lab" or len(f.alt_units) <= index:
            return None
        unit, factor = f.alt_units[index]
        value = round(f.value * factor, 2)
        quantity = {"value": value, "unit": unit, "system": UCUM, "code": unit}
        return [observation(f, _canonical(f), f"unit{index}", valueQuantity=quantity)]

    return build


_register("lab:alternative-unit-1", lab_alt_unit(0))
_register("lab:alternative-unit-2", lab_alt_unit(1))


def lab_panel_component(f: Finding) -> list[Resource] | None:
    """The value as a component of a panel Observation (coagulation / CBC panels)."""
    if f.kind != "lab":
        return None
    component = {
        "code": _canonical(f),
        "valueQuantity": {"value": f.value, "unit": f.unit, "system": UCUM, "code": f.unit},
    }
    panel = _cc(EPIC_LAB, "PANEL-1", "Lab panel")
    return [observation(f, panel, "panel", valueQuantity=_DROP, component=[component])]


def lab_in_diagnostic_report(f: Finding) -> list[Resource] | None:
    """A DiagnosticReport whose result points to the Observation, the report listed first."""
    if f.kind not in ("lab", "result"):
        return None
    obs = observation(f, _canonical(f), "in-report")
    report = {
        "resourceType": "DiagnosticReport",
        "id": _id(f, "report"),
        "status": "final",
        "subject": {"reference": f.patient},
        "code": _cc(LOINC, "11502-2", "Laboratory report"),
        "effectiveDateTime": _day(f),
        "result": [{"reference": f"Observation/{obs['id']}"}],
    }
    return [report, obs]


_register("lab:panel-component", lab_panel_component)
_register("lab:in-diagnostic-report", lab_in_diagnostic_report)

# Coded results (a positive hCG): each way "positive" is written.
_lab_shape(
    "interpretation-positive-only",
    kinds=("result",),
    valueCodeableConcept=_DROP,
    interpretation=[_cc(INTERPRETATION, "POS", "Positive")],
)
_lab_shape("value-string-positive", kinds=("result",), valueCodeableConcept=_DROP, valueString="Positive")
_lab_shape("value-string-pos", kinds=("result",), valueCodeableConcept=_DROP, valueString="POS")
_lab_shape("value-boolean-true", kinds=("result",), valueCodeableConcept=_DROP, valueBoolean=True)
_lab_shape("value-detected", kinds=("result",), valueCodeableConcept=_cc(SNOMED, "260373001", "Detected"))
_lab_shape(
    "value-positive-with-local",
    kinds=("result",),
    valueCodeableConcept=_concept(_coding(EPIC_LAB, "POSITIVE", "Positive"), _coding(SNOMED, "10828004", "Positive")),
)
_lab_shape("value-interpretation-pos-code", kinds=("result",), valueCodeableConcept=_cc(INTERPRETATION, "POS"))
_lab_shape("status-amended", kinds=("result",), status="amended")
_lab_shape("effective-year-month", kinds=("result",), effectiveDateTime=lambda f: f.as_of.isoformat()[:7], issued=_DROP)
_lab_shape(
    "value-local-positive-only",
    False,
    kinds=("result",),
    valueCodeableConcept=_concept(_coding(EPIC_LAB, "POSITIVE", "Positive"), text="Positive"),
)
_lab_shape("preliminary", False, kinds=("result",), status="preliminary")
_lab_shape("unknown-status", False, kinds=("result",), status="F")


# --- baseline shapes (the canonical resource of each kind) --------------------------------


def lab_canonical(f: Finding) -> list[Resource] | None:
    return [observation(f, _canonical(f), "canonical")] if f.kind == "lab" else None


def result_canonical(f: Finding) -> list[Resource] | None:
    return [observation(f, _canonical(f), "canonical")] if f.kind == "result" else None


def medication_canonical(f: Finding) -> list[Resource] | None:
    return [_med_request(f, "canonical")] if f.kind == "medication" else None


_register("lab:canonical", lab_canonical)
_register("result:canonical", result_canonical)
_register("medication:canonical", medication_canonical)


def shapes_for(finding: Finding) -> Iterator[tuple[Shape, list[Resource]]]:
    """Yield (shape, resources) for every shape that applies to the finding."""
    for shape in SHAPES:
        built = shape.build(finding)
        if built:
            yield shape, built


# --- re-encodings: the same record, written another understood way ------------------------

Reencoding = Callable[[Sequence[Mapping[str, Any]]], list[Resource]]
REENCODINGS: dict[str, Reencoding] = {}


def reencoding(fn: Reencoding) -> Reencoding:
    REENCODINGS[fn.__name__.replace("_", "-")] = fn
    return fn


def _clone(resources: Sequence[Mapping[str, Any]]) -> list[Resource]:
    return copy.deepcopy([dict(r) for r in resources])


def _walk_codings(value: Any, fn: Callable[[dict[str, Any]], None]) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("system"), str) and isinstance(value.get("code"), str):
            fn(value)
        for item in value.values():
            _walk_codings(item, fn)
    elif isinstance(value, list):
        for item in value:
            _walk_codings(item, fn)


def _clinical(resources: list[Resource]) -> Iterator[Resource]:
    """Resources whose codings are clinical evidence (answers keep their own codes)."""
    for r in resources:
        if r.get("resourceType") not in ("QuestionnaireResponse", "Patient"):
            yield r


def _recode_icd(transform: Callable[[dict[str, Any]], None]) -> Reencoding:
    def apply(resources: Sequence[Mapping[str, Any]]) -> list[Resource]:
        out = _clone(resources)

        def fn(coding: dict[str, Any]) -> None:
            if coding["system"] == ICD10CM:
                transform(coding)

        for r in _clinical(out):
            _walk_codings(r, fn)
        return out

    return apply


def _set(**kw: Any) -> Callable[[dict[str, Any]], None]:
    def fn(coding: dict[str, Any]) -> None:
        for k, v in kw.items():
            coding[k] = v(coding) if callable(v) else v

    return fn


REENCODINGS["icd10-undotted"] = _recode_icd(_set(code=lambda c: c["code"].replace(".", "")))
REENCODINGS["icd10-lowercase-undotted"] = _recode_icd(_set(code=lambda c: c["code"].replace(".", "").lower()))
REENCODINGS["icd10-oid"] = _recode_icd(_set(system=ICD10CM_OID))
REENCODINGS["icd10-who-uri"] = _recode_icd(_set(system=ICD10_WHO))


def _add_coding(make: Callable[[dict[str, Any]], dict[str, Any] | None], first: bool) -> Reencoding:
    def apply(resources: Sequence[Mapping[str, Any]]) -> list[Resource]:
        out = _clone(resources)

        def visit(value: Any) -> None:
            if isinstance(value, dict):
                codings = value.get("coding")
                if isinstance(codings, list) and codings and all(isinstance(c, dict) for c in codings):
                    extra = [e for e in (make(c) for c in codings) if e is not None]
                    value["coding"] = extra + codings if first else codings + extra
                for key, item in value.items():
                    if key != "coding":
                        visit(item)
            elif isinstance(value, list):
                for item in value:
                    visit(item)

        for r in _clinical(out):
            visit(r)
        return out

    return apply


def _snomed_beside(coding: dict[str, Any]) -> dict[str, Any] | None:
    if coding.get("system") != ICD10CM or not isinstance(coding.get("code"), str):
        return None
    eq = TERMINOLOGY.snomed_for_icd10.get(coding["code"])
    return _coding(SNOMED, *eq) if eq else None


def _epic_beside(coding: dict[str, Any]) -> dict[str, Any] | None:
    if coding.get("system") not in (ICD10CM, SNOMED, LOINC, RXNORM):
        return None
    return _coding(EPIC_DX, f"E{abs(hash(coding.get('code'))) % 100000}", coding.get("display") or "local")


REENCODINGS["add-snomed-beside-icd10"] = _add_coding(_snomed_beside, False)
REENCODINGS["add-epic-local-coding-first"] = _add_coding(_epic_beside, True)


def _medications(resources: list[Resource]) -> Iterator[Resource]:
    for r in resources:
        if r.get("resourceType", "").startswith("Medication") and isinstance(r.get("medicationCodeableConcept"), dict):
            yield r


@reencoding
def medication_contained(resources: Sequence[Mapping[str, Any]]) -> list[Resource]:
    out = _clone(resources)
    for r in _medications(out):
        r.setdefault("contained", []).append(
            {"resourceType": "Medication", "id": "med", "code": r.pop("medicationCodeableConcept")}
        )
        r["medicationReference"] = {"reference": "#med"}
    return out


def _separate(after: bool) -> Reencoding:
    def apply(resources: Sequence[Mapping[str, Any]]) -> list[Resource]:
        out = _clone(resources)
        meds: list[Resource] = []
        for r in _medications(out):
            mid = f"med-of-{r.get('id')}"
            meds.append({"resourceType": "Medication", "id": mid, "code": r.pop("medicationCodeableConcept")})
            r["medicationReference"] = {"reference": f"Medication/{mid}"}
        return out + meds if after else meds + out

    return apply


REENCODINGS["medication-entry-after"] = _separate(True)
REENCODINGS["medication-entry-before"] = _separate(False)


@reencoding
def reversed_order(resources: Sequence[Mapping[str, Any]]) -> list[Resource]:
    return _clone(resources)[::-1]


@reencoding
def duplicated_from_another_search(resources: Sequence[Mapping[str, Any]]) -> list[Resource]:
    """Each resource again (same id), as a second prefetch search returns it, inside Bundles."""
    out = _clone(resources)
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in _clone(resources)]}
    return [*out, bundle]


def _values(resources: Sequence[Mapping[str, Any]], to_integer: bool) -> list[Resource]:
    out = _clone(resources)
    for r in out:
        if r.get("resourceType") != "Observation":
            continue
        q = r.get("valueQuantity")
        if to_integer and isinstance(q, dict) and isinstance(q.get("value"), int | float) and set(q) <= {"value"}:
            if float(q["value"]).is_integer():
                r["valueInteger"] = int(r.pop("valueQuantity")["value"])
        elif not to_integer and isinstance(r.get("valueInteger"), int) and not isinstance(r["valueInteger"], bool):
            r["valueQuantity"] = {"value": r.pop("valueInteger")}
    return out


REENCODINGS["value-quantity-to-integer"] = lambda rs: _values(rs, True)
REENCODINGS["value-integer-to-quantity"] = lambda rs: _values(rs, False)

_DATETIME_KEYS = frozenset(
    {
        "onsetDateTime",
        "abatementDateTime",
        "recordedDate",
        "effectiveDateTime",
        "performedDateTime",
        "authoredOn",
        "whenHandedOver",
        "dateAsserted",
        "started",
        "start",
        "end",
    }
)


@reencoding
def dates_with_timezone(resources: Sequence[Mapping[str, Any]]) -> list[Resource]:
    """Full dates become local-noon dateTimes with an offset (same calendar day anywhere)."""
    out = _clone(resources)

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in _DATETIME_KEYS and isinstance(item, str) and len(item) == 10:
                    value[key] = f"{item}T12:00:00+02:00"
                else:
                    visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    for r in out:
        if r.get("resourceType") not in ("Patient", "QuestionnaireResponse"):
            visit(r)
    return out


# One-line summaries the shape tests leave for the end of the run (tests/conftest.py prints them).
SUMMARY: list[str] = []


def changed(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> bool:
    """Return True when a re-encoding changed anything (no-op variants are not counted)."""
    return json.dumps(list(before), sort_keys=True) != json.dumps(list(after), sort_keys=True)
