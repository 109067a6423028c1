"""The Da Vinci CRD coverage-information extension, built from a decision (cds-hooks-crd.md §3.10).

One place maps an engine outcome to ``covered`` / ``pa-needed`` / ``doc-needed``
and the rest; a conformance helper (tests/conformance.py) checks every
invariant (crd-ci-q1..q9) on what comes out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds_server.engine import OrderDecision, Outcome
from cds_server.pipeline.dtr_response import open_questions
from fhir_mappings.codes import arr, obj

EXT_URL = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
REASON_SYSTEM = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"


@dataclass
class Assertion:
    """The content of one coverage-information extension."""

    covered: str
    pa_needed: str | None = None
    doc_needed: list[str] = field(default_factory=list)
    doc_purpose: list[str] = field(default_factory=list)
    reasons: list[tuple[str | None, str]] = field(default_factory=list)
    questionnaires: list[str] = field(default_factory=list)
    info_needed: list[str] = field(default_factory=list)
    billing_codes: list[Mapping[str, str]] = field(default_factory=list)
    satisfied_pa_id: str | None = None
    expiry_date: date | None = None
    assertion_id: str = ""
    date: date | None = None
    coverage_ref: str = ""

    def extension(self) -> dict[str, Any]:
        """Return the extension, sub-extensions in the order the definition lists them."""
        parts: list[dict[str, Any]] = [
            {"url": "coverage", "valueReference": {"reference": self.coverage_ref}},
            {"url": "covered", "valueCode": self.covered},
        ]
        if self.pa_needed:
            parts.append({"url": "pa-needed", "valueCode": self.pa_needed})
        parts += [{"url": "doc-needed", "valueCode": c} for c in self.doc_needed]
        parts += [{"url": "doc-purpose", "valueCode": c} for c in self.doc_purpose]
        parts += [{"url": "info-needed", "valueCode": c} for c in self.info_needed]
        parts += [{"url": "billingCode", "valueCoding": dict(c)} for c in self.billing_codes]
        for code, text in self.reasons:
            concept: dict[str, Any] = {"text": text}
            if code:
                concept["coding"] = [{"system": REASON_SYSTEM, "code": code}]
            parts.append({"url": "reason", "valueCodeableConcept": concept})
        parts += [{"url": "questionnaire", "valueCanonical": q} for q in self.questionnaires]
        parts.append({"url": "date", "valueDate": (self.date or date.min).isoformat()})
        parts.append({"url": "coverage-assertion-id", "valueString": self.assertion_id})
        if self.satisfied_pa_id:
            parts.append({"url": "satisfied-pa-id", "valueString": self.satisfied_pa_id})
        if self.expiry_date:
            parts.append({"url": "expiry-date", "valueDate": self.expiry_date.isoformat()})
        return {"url": EXT_URL, "extension": parts}


def _names(decision: OrderDecision, ids: list[str]) -> str:
    texts = []
    for criterion_id in ids:
        node = decision.criterion(criterion_id)
        texts.append(f"{node.text} ({criterion_id})" if node else criterion_id)
    return "; ".join(texts)


def assertion_for(
    decision: OrderDecision,
    questionnaire: str | None,
    documentation_allowed: bool,
    auto_approval: bool,
    question_texts: Mapping[str, str] | None = None,
) -> Assertion:
    """Map an engine decision to coverage information (issue 3 item 6)."""
    outcome = decision.outcome
    if outcome is Outcome.CRITERIA_MET and auto_approval and decision.auto_approval:
        return Assertion("covered", "satisfied")
    if outcome is Outcome.CRITERIA_MET:
        why = "Medical-necessity criteria are met; the plan reviews this request before authorizing it."
        if decision.conflicts:
            why = "The record contradicts documentation (" + "; ".join(decision.conflicts) + "); the plan reviews it."
        return Assertion("covered", "auth-needed", reasons=[(None, why)])
    if outcome is Outcome.DOCUMENTATION_NEEDED:
        asked = open_questions(decision) or decision.questions  # what the card counts and the form requires
        texts = [obj(question_texts).get(q, q) for q in asked]
        text = "Documentation needed to decide: " + ("; ".join(texts) or "see the questionnaire")
        if not documentation_allowed:
            return Assertion("covered", "auth-needed", reasons=[(None, text + " (asked at order signing).")])
        return Assertion(
            "covered", "auth-needed", ["clinical"], ["withpa"], [(None, text)], [questionnaire] if questionnaire else []
        )
    if outcome in (Outcome.NOT_MET, Outcome.CONTRAINDICATED):
        label = "Not appropriate because of" if outcome is Outcome.CONTRAINDICATED else "Guideline criteria not met"
        return Assertion("covered", "auth-needed", reasons=[(None, f"{label}: {_names(decision, decision.failing)}")])
    if decision.applicability == "unidentified":
        return Assertion(
            "covered",
            "conditional",
            reasons=[(None, decision.summary + "; whether prior authorization is needed depends on what is ordered.")],
            info_needed=["detail-code"],  # the billing code of what is ordered
        )
    if decision.applicability == "outside-cohort":
        return Assertion(
            "covered", "auth-needed", reasons=[(None, decision.summary + "; the request goes to ordinary review.")]
        )
    return Assertion("covered", "no-auth")


def technical_assertion(text: str) -> Assertion:
    """Coverage information when a technical failure prevented a determination (CRD resp-43)."""
    return Assertion("indeterminate", "indeterminate", reasons=[("technical", text)])


def not_covered_assertion(code: str, text: str) -> Assertion:
    """Coverage information for a member or coverage the payer cannot use (CRD resp-44, resp-45)."""
    return Assertion("not-covered", reasons=[(code, text)])


def assertion_id(
    order: Mapping[str, Any],
    coverage_ref: str,
    assertion: Assertion,
    decision: Mapping[str, Any] | None,
    salt: str = "",
    key: str = "",
) -> str:
    """Return an id that is the same for the same order, coverage and decision (and only then).

    "Decision" is all of it (``OrderDecision.to_dict()``, made once per order by the caller, which
    keeps it too): outcome, every criterion's result with its
    evidence, the evaluation date and the CarePath version, so a decision made
    on a different record is a different assertion with its own audit record.
    ``key`` is a random secret of the deployment (kept in its database): with it the id is
    stable for the service (a repeat gets the same assertion and number) but cannot be
    computed by anyone who has only the request.
    """
    payload = {
        "order": strip_coverage_information(order),
        "coverage": coverage_ref,
        "covered": assertion.covered,
        "pa": assertion.pa_needed,
        "doc": assertion.doc_needed,
        "reasons": assertion.reasons,
        "decision": decision,
        "salt": salt,
    }
    message = json.dumps(payload, sort_keys=True, default=str).encode()
    # Without a key (only tests that pin ids in golden files) the id is the plain digest.
    digest = hmac.new(key.encode(), message, hashlib.sha256).hexdigest() if key else hashlib.sha256(message).hexdigest()
    return "ca-" + digest[:32]


def strip_coverage_information(resource: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a resource without coverage-information extensions."""
    copy = dict(resource)
    extensions = [e for e in arr(resource.get("extension")) if not (isinstance(e, Mapping) and e.get("url") == EXT_URL)]
    if extensions:
        copy["extension"] = extensions
    else:
        copy.pop("extension", None)
    return copy


def existing_assertion_ids(resource: Mapping[str, Any]) -> set[str]:
    """Return the coverage-assertion-ids already on a resource."""
    found = set()
    for ext in arr(resource.get("extension")):
        if isinstance(ext, Mapping) and ext.get("url") == EXT_URL:
            for part in arr(ext.get("extension")):
                if isinstance(part, Mapping) and part.get("url") == "coverage-assertion-id":
                    found.add(str(part.get("valueString")))
    return found


def annotate(resource: Mapping[str, Any], assertion: Assertion) -> dict[str, Any]:
    """Return the resource with its coverage information for this coverage replaced by ``assertion``."""
    copy = dict(resource)
    kept = []
    for ext in arr(resource.get("extension")):
        same_coverage = (
            isinstance(ext, Mapping)
            and ext.get("url") == EXT_URL
            and any(
                isinstance(p, Mapping)
                and p.get("url") == "coverage"
                and obj(p.get("valueReference")).get("reference") == assertion.coverage_ref
                for p in arr(ext.get("extension"))
            )
        )
        if not same_coverage:
            kept.append(ext)
    copy["extension"] = [*kept, assertion.extension()]
    return copy
