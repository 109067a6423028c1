"""What an evaluation returns: outcomes and criterion-by-criterion explanations."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cds_server.engine.logic import Tri


class Outcome(str, Enum):
    """Service-level outcome for one order (product-decisions.md §2)."""

    CRITERIA_MET = "criteria-met"
    NOT_MET = "not-met"
    CONTRAINDICATED = "contraindicated"
    DOCUMENTATION_NEEDED = "documentation-needed"
    NOT_APPLICABLE = "not-applicable"


@dataclass
class CriterionResult:
    """The result of one criterion node, with the evidence that decided it."""

    id: str
    text: str
    cite: str
    kind: str
    result: Tri
    reason: str
    evidence: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    children: list[CriterionResult] = field(default_factory=list)
    logic: str = "leaf"  # leaf, all, any, not, or ref (a criterion that is another one word for word)
    conflict: str = ""  # a documentation answer the record contradicts (product-decisions.md §7)

    def walk(self) -> list[CriterionResult]:
        """Return this node and all its descendants, depth first."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        data: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "cite": self.cite,
            "kind": self.kind,
            "logic": self.logic,
            "result": self.result.value,
            "reason": self.reason,
        }
        if self.evidence:
            data["evidence"] = list(self.evidence)
        if self.questions:
            data["questions"] = list(self.questions)
        if self.parameters:
            data["parameters"] = dict(self.parameters)
        if self.children:
            data["children"] = [c.to_dict() for c in self.children]
        return data


@dataclass
class OrderDecision:
    """The decision for one draft order."""

    order_ref: str
    outcome: Outcome
    summary: str
    evaluation_date: str
    carepath_id: str | None = None
    carepath_version: str | None = None
    service_id: str | None = None
    service_title: str | None = None
    auto_approval: bool = False
    applicability: str = ""
    criteria: list[CriterionResult] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)
    answers_used: list[str] = field(default_factory=list)
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    prefill: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)  # record facts an answer contradicts (product-decisions §7)
    notes: list[str] = field(default_factory=list)  # what the reader should know about how it was decided

    def criterion(self, criterion_id: str) -> CriterionResult | None:
        """Return the result of the criterion with this id, wherever it sits."""
        for root in self.criteria:
            for node in root.walk():
                if node.id == criterion_id:
                    return node
        return None

    def results_by_id(self) -> dict[str, Tri]:
        """Return every criterion's result keyed by criterion id."""
        return {node.id: node.result for root in self.criteria for node in root.walk()}

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the auditable decision)."""
        return {
            "order": self.order_ref,
            "outcome": self.outcome.value,
            "summary": self.summary,
            "evaluationDate": self.evaluation_date,
            "carePath": {"id": self.carepath_id, "version": self.carepath_version} if self.carepath_id else None,
            "service": {"id": self.service_id, "title": self.service_title} if self.service_id else None,
            "autoApproval": self.auto_approval,
            "applicability": self.applicability,
            "criteria": [c.to_dict() for c in self.criteria],
            "questions": list(self.questions),
            "failing": list(self.failing),
            "answersUsed": list(self.answers_used),
            "alternatives": list(self.alternatives),
            "prefill": dict(self.prefill),
            **({"conflicts": list(self.conflicts)} if self.conflicts else {}),
            **({"notes": list(self.notes)} if self.notes else {}),
        }
