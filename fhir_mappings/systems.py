"""Canonical code-system URIs and the normalisation of codes from real EHR data.

Every comparison in this project is on (system, code) after normalisation;
a bare code is never compared. Aliases exist because real data spells some
systems in several ways (clinical-coding.md §0.1).
"""

from __future__ import annotations

import re

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CMS_POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
UCUM = "http://unitsofmeasure.org"
NDC = "http://hl7.org/fhir/sid/ndc"

# Code systems a claim is billed in: an order carrying none of them cannot be told apart by
# its billing code, so it is never waved through as "not governed" (product-decisions.md §8).
BILLING_SYSTEMS = frozenset(
    {"http://www.ama-assn.org/go/cpt", "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"}
)

# Spellings seen in the wild, mapped to the canonical URI.
_ALIASES: dict[str, str] = {
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": HCPCS,
    "urn:oid:2.16.840.1.113883.6.285": HCPCS,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "http://www.ama-assn.org/go/cpt/": CPT,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    # WHO ICD-10 spellings: US EHRs put ICD-10-CM codes under them; the codes that both share mean the same.
    "http://hl7.org/fhir/sid/icd-10": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10/": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.3": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10-us": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10-cm/": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "http://www.nlm.nih.gov/research/umls/rxnorm/": RXNORM,
    "urn:oid:2.16.840.1.113883.6.69": NDC,
    "http://hl7.org/fhir/sid/ndc/": NDC,
    "http://loinc.org/": LOINC,
    "http://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set": CMS_POS,
    "urn:oid:2.16.840.1.113883.5.4": ACTCODE,
}


def normalize_system(system: str | None) -> str:
    """Return the canonical URI for ``system`` (unknown systems pass through)."""
    if not system:
        return ""
    system = system.strip()
    return _ALIASES.get(system, system)


def normalize_icd10(code: str) -> str:
    """Dot an ICD-10-CM code the way the tabular list writes it.

    EHR feeds often drop the dot (``M47812``); the category is always the
    first three characters, so the dot goes after them.

    >>> normalize_icd10("m47812")
    'M47.812'
    >>> normalize_icd10("M54.2")
    'M54.2'
    >>> normalize_icd10("D65")
    'D65'
    """
    code = code.strip().upper()
    if "." in code or len(code) <= 3:
        return code.rstrip(".")
    return f"{code[:3]}.{code[3:]}"


def normalize_code(system: str, code: str | None) -> str:
    """Return ``code`` as it is compared within the (already canonical) ``system``."""
    if code is None:
        return ""
    code = code.strip()
    if system == ICD10CM:
        return normalize_icd10(code)
    if system in (CPT, HCPCS):
        return base_procedure_code(code)
    return code


_MODIFIER = re.compile(r"^([0-9A-Z]{5})(?:[-\s:]+[0-9A-Z]{2})+$")


def base_procedure_code(code: str) -> str:
    """Return a CPT/HCPCS code without the modifiers billing systems append (``64479-RT`` -> ``64479``).

    Modifiers say which side or which repeat, never which service, so the
    CarePath's code lists match on the five-character base.

    >>> base_procedure_code("64479-rt")
    '64479'
    >>> base_procedure_code("64479 RT 59")
    '64479'
    >>> base_procedure_code("G0151")
    'G0151'
    """
    code = code.upper()
    match = _MODIFIER.match(code)
    return match.group(1) if match else code
