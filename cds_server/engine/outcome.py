"""Turning a service's decided criteria into its outcome, and explaining it.

Per order (product-decisions.md §2-§3): contraindicated, not met, documentation
needed (with the questions that still matter), criteria met (auto-approval
unless a conflict or the CarePath says otherwise); the failing criteria, the
one-line summary, the alternatives worth offering and the answers used.
"""

from __future__ import annotations

from typing import Any

from cds_server.engine.context import EvalContext
from cds_server.engine.logic import Tri, all_of
from cds_server.engine.model import REQUEST_KINDS, Service
from cds_server.engine.prefill import prefill
from cds_server.engine.result import CriterionResult, OrderDecision, Outcome


def decide_outcome(
    ctx: EvalContext, service: Service, roots: list[CriterionResult], routing: list[CriterionResult], cohort: str
) -> OrderDecision:
    """The order's decision from its service's decided criteria: the outcome, and everything that explains it."""
    outcome, failing = _outcome(service, roots)
    cp = ctx.carepath
    if ctx.brief:  # an alternative's verdict: its outcome is all that is read
        return OrderDecision(
            ctx.order.ref, outcome, "", ctx.as_of.isoformat(), cp.id, cp.version, service.id, service.title
        )
    # Every node once, depth first (routing first), for everything below that reads the whole tree.
    routed = [n for r in routing for n in r.walk()]
    all_nodes = [n for r in roots for n in r.walk()]
    conflicts = [f"{n.text}: {n.conflict}" for n in routed + all_nodes if n.conflict]
    questions = open_questions(roots) if outcome is Outcome.DOCUMENTATION_NEEDED else []
    used = sorted({e for n in all_nodes for e in n.evidence if e.startswith("QuestionnaireResponse/")})
    return OrderDecision(
        ctx.order.ref,
        outcome,
        _summary(outcome, service, all_nodes, failing),
        ctx.as_of.isoformat(),
        cp.id,
        cp.version,
        service.id,
        service.title,
        auto_approval=outcome is Outcome.CRITERIA_MET and service.auto_approval and not conflicts,
        conflicts=list(dict.fromkeys(conflicts)),
        applicability=cohort,
        criteria=routing + roots,
        questions=questions,
        failing=failing,
        answers_used=used,
        alternatives=_alternatives(service, outcome, routed + all_nodes) if ctx.record_available else [],
        prefill=prefill(ctx, all_nodes) if outcome is Outcome.DOCUMENTATION_NEEDED else {},
    )


def _outcome(service: Service, roots: list[CriterionResult]) -> tuple[Outcome, list[str]]:
    """The outcome by precedence (product-decisions.md §2), and the criteria that decided a refusal."""
    by_kind = dict(zip(list(service.groups), roots, strict=False))
    ni = by_kind.get("nonIndications")
    request = all_of(by_kind[k].result for k in REQUEST_KINDS if k in by_kind)
    if ni is not None and ni.result is Tri.MET:
        return Outcome.CONTRAINDICATED, _deciding(ni, Tri.MET)
    if request is Tri.NOT_MET:
        return Outcome.NOT_MET, [i for k in REQUEST_KINDS if k in by_kind for i in _deciding(by_kind[k], Tri.NOT_MET)]
    if request is Tri.UNKNOWN or (ni is not None and ni.result is Tri.UNKNOWN):
        return Outcome.DOCUMENTATION_NEEDED, []
    return Outcome.CRITERIA_MET, []


def _alternatives(service: Service, outcome: Outcome, nodes: list[CriterionResult]) -> list[dict[str, Any]]:
    """Return the service's alternatives whose conditions hold, for an order that is not approved.

    Only offered on a record that was obtained: "missing" must mean missing, not unseen.
    """
    if outcome is Outcome.CRITERIA_MET:
        return []
    results: dict[str, Tri] = {}
    for node in nodes:
        results.setdefault(node.id, node.result)
    chosen = []
    for alt in service.alternatives:
        hits = [c["criterion"] for c in alt["when"] if results.get(c["criterion"], Tri.UNKNOWN).value in c["results"]]
        holds = bool(hits) if alt.get("match") == "any" else len(hits) == len(alt["when"])
        if holds:
            chosen.append({**alt, "because": hits})
    return chosen


def _deciding(root: CriterionResult, value: Tri) -> list[str]:
    """Return ids of the criteria under ``root`` that decided its ``value``, at the level a reader cites.

    A leaf, a reference and a negation decide as a whole; a group is explained
    by its children that have the same result.
    """
    if root.result is not value:
        return []
    if root.logic in ("leaf", "ref", "not"):
        return [root.id]
    ids = [c.id for c in root.children if c.result is value]
    return ids or [root.id]


def open_questions(roots: list[CriterionResult]) -> list[str]:
    """Return the questionnaire items that would settle the unknown criteria, in order."""
    found: dict[str, None] = {}

    def visit(node: CriterionResult) -> None:
        if node.result is not Tri.UNKNOWN:
            return
        for q in node.questions:
            found.setdefault(q, None)
        for child in node.children:
            visit(child)

    for root in roots:
        visit(root)
    return list(found)


def _summary(outcome: Outcome, service: Service, nodes: list[CriterionResult], failing: list[str]) -> str:
    texts = {n.id: n.text for n in nodes}
    names = "; ".join(texts.get(i, i) for i in failing[:3])
    if outcome is Outcome.CRITERIA_MET:
        return f"{service.title}: medical-necessity criteria met"
    if outcome is Outcome.CONTRAINDICATED:
        return f"{service.title}: not appropriate because of {names}"
    if outcome is Outcome.NOT_MET:
        return f"{service.title}: criteria not met ({names})"
    return f"{service.title}: documentation needed to decide"
