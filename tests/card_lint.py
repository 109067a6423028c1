"""What card text a clinician reads must never contain (issue 10 §1), as a reusable check.

Criterion ids, value-set ids, code-system names and URLs, resource references and
Python reprs belong on the decision page, not on a card; a summary is under 140
characters and never cut mid-word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from cds_server.engine import CarePath

CODE_SYSTEM = re.compile(
    r"https?://(?:hl7\.org/fhir/sid|snomed\.info|loinc\.org|www\.nlm\.nih\.gov|www\.ama-assn\.org|terminology\.hl7"
    r"|www\.cms\.gov|ncicb\.nci\.nih\.gov|dicom\.nema\.org|www\.whocc\.no)"
    r"|\((?:icd-10-cm|sct|cpt|loinc(?:\.org)?|rxnorm|ndc|atc|Thesaurus\.owl|Place\\?_of\\?_Service\\?_Code\\?_Set"
    r"|v3-ActCode|DCM|HCPCSReleaseCodeSets)\)"
    r"|\b(?:SNOMED CT|RxNorm|ICD-10-CM|LOINC|NDC|CPT) \d"
)
REPR = re.compile(r"'(?:True|False|None|none)'|\{'|\['|\bNone\b(?! of these)|\bTri\.|\bOutcome\.|answered '")
RESOURCE_REF = re.compile(
    r"\b(?:Condition|Observation|Procedure|Device|AllergyIntolerance|DiagnosticReport|ImagingStudy|Medication"
    r"(?:Request|Statement|Dispense|Administration)|Encounter|QuestionnaireResponse|Patient)/[A-Za-z0-9]"
)
# A bare code: a SNOMED CT concept id (6 digits or more), a LOINC code or a CPT code after "= " or "code ".
RAW_CODE = re.compile(r"(?<![\w.:/-])\d{6,18}(?![\w.-])|\b\d{1,7}-\d\b(?! ?(?:weeks|days|months))")
_DECISION_LINK = re.compile(r"\]\(https?://[^)]*\)")


def criterion_ids(carepaths: Iterable[CarePath]) -> re.Pattern[str]:
    """A pattern for every criterion id of the CarePaths (those with a dash: MRI-I1, PT-S1.initial)."""
    ids = sorted({i for cp in carepaths for i in cp.nodes if "-" in i}, key=len, reverse=True)
    return re.compile(r"(?<![\w.-])(?:" + "|".join(re.escape(i) for i in ids) + r")(?![\w-])")


def card_texts(card: Mapping[str, Any]) -> list[str]:
    """Everything of a card a clinician reads: summary, detail (without link targets), labels."""
    texts = [str(card.get("summary", "")), _DECISION_LINK.sub("]", str(card.get("detail", "")))]
    texts += [str(s.get("label", "")) for s in card.get("suggestions", [])]
    texts += [str(a.get("description", "")) for s in card.get("suggestions", []) for a in s.get("actions", [])]
    texts += [str(link.get("label", "")) for link in card.get("links", [])]
    return texts


def problems(card: Mapping[str, Any], ids: re.Pattern[str]) -> list[str]:
    """Every rule of issue 10 §1 the card breaks, each naming the offending text."""
    found = []
    summary = str(card.get("summary", ""))
    if len(summary) >= 140:
        found.append(f"summary of {len(summary)} characters")
    if summary.endswith("…") and not re.search(r"\w…$", summary):
        found.append("summary ends in a cut")
    if re.search(r"\w…$", summary) and not re.search(r"\s\S+…$", summary):
        found.append("summary cut mid-word")
    for text in card_texts(card):
        for name, pattern in (
            ("criterion id", ids),
            ("value-set id", re.compile(r"\bVS-")),
            ("code system", CODE_SYSTEM),
            ("Python repr", REPR),
            ("resource reference", RESOURCE_REF),
            ("raw code", RAW_CODE),
        ):
            hit = pattern.search(text)
            if hit:
                found.append(f"{name} {hit.group(0)!r} in: {text[max(0, hit.start() - 60) : hit.end() + 40]!r}")
    return found
