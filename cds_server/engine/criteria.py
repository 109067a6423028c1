"""Deciding criteria: groups in three-valued logic, and one leaf from record evidence, answers and silence.

The one place that decides how record evidence, a documentation answer and
silence combine for a leaf (:func:`decide_leaf`, product-decisions.md §1-§2,
the record outranking an answer it contradicts: §7), and how groups (all, any,
not) and references combine their parts (:func:`evaluate`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from cds_server.engine.context import EvalContext
from cds_server.engine.logic import Tri, all_of, any_of, compare
from cds_server.engine.model import GROUP_KINDS, AnswerSpec, Group, Leaf, Node, Ref
from cds_server.engine.operators import FALSE, REGISTRY, SUGGESTIVE, TRUE, Finding
from cds_server.engine.result import CriterionResult
from fhir_mappings.codes import arr, coding_key

_KIND_LABEL = {
    "population": "population",
    "indications": "indication",
    "subsequent": "subsequent-request",
    "frequency": "frequency",
    "siteOfService": "site-of-service",
    "nonIndications": "non-indication",
    "selection": "selection",
}


def evaluate(node: Node, ctx: EvalContext, kind: str, memo: dict[tuple[str, str], CriterionResult]) -> CriterionResult:
    key = (node.id, kind)
    found = memo.get(key)
    if found is None:
        found = memo[key] = _evaluate_uncached(node, ctx, kind, memo)
    return found


def _evaluate_uncached(
    node: Node, ctx: EvalContext, kind: str, memo: dict[tuple[str, str], CriterionResult]
) -> CriterionResult:
    if isinstance(node, Leaf):
        return decide_leaf(node, ctx, kind)
    if isinstance(node, Ref):
        target = evaluate(ctx.carepath.nodes[node.target], ctx, kind, memo)
        return CriterionResult(
            node.id,
            node.text,
            node.cite,
            _KIND_LABEL[kind],
            target.result,
            f"same criterion as {node.target}: {target.reason}",
            children=[target],
            logic="ref",
        )
    assert isinstance(node, Group)
    children = [evaluate(child, ctx, kind, memo) for child in node.children]
    values = [c.result for c in children]
    if node.op == "all":
        result = all_of(values)
    elif node.op == "any":
        result = any_of(values)
    else:
        result = values[0].negate()
    return CriterionResult(
        node.id,
        node.text,
        node.cite,
        _KIND_LABEL[kind],
        result,
        _group_reason(node.op, result, children),
        parameters=dict(node.parameters),
        children=children,
        logic=node.op,
    )


def _group_reason(op: str, result: Tri, children: list[CriterionResult]) -> str:
    if op == "not":
        return f"negation of: {children[0].text}"
    deciding = [c for c in children if c.result is result]
    if op == "all" and result is Tri.MET:
        return "all of these are met"
    if op == "any" and result is Tri.NOT_MET:
        return "none of these is met"
    label = {Tri.MET: "met by", Tri.NOT_MET: "not met because of", Tri.UNKNOWN: "unknown because of"}[result]
    return f"{label}: " + "; ".join(c.text for c in deciding[:4])


_RECORDED = {TRUE: Tri.MET, FALSE: Tri.NOT_MET}


def decide_leaf(leaf: Leaf, ctx: EvalContext, kind: str) -> CriterionResult:
    """Combine record evidence, documentation answers and silence for one criterion.

    Order of precedence: decisive evidence that the statement holds; then a
    documentation answer; then decisive evidence that it does not; then
    evidence needing confirmation (unknown); then silence, read by the
    criterion's kind (absent for non-indications, unknown otherwise).
    """
    finding = _finding(leaf, ctx)
    answered = answer_result(leaf.answer, ctx)
    label = _KIND_LABEL[kind]

    def result(value: Tri, reason: str, evidence: list[str]) -> CriterionResult:
        return CriterionResult(
            leaf.id, leaf.text, leaf.cite, label, value, reason, evidence, list(leaf.questions), dict(leaf.parameters)
        )

    recorded = _RECORDED.get(finding.status)
    if recorded is not None and answered is not None and _contradicts(leaf, finding, answered[0], ctx):
        # The record outranks an answer on a fact it states (product-decisions.md §7): the record
        # decides, and the contradiction is named so that no authorization rests on either.
        decided = result(recorded, finding.reason, finding.evidence + [answered[2]])
        decided.conflict = f"{answered[1]}, but the record shows: {finding.reason}"
        return decided
    decided = _precedence(leaf, ctx, kind, finding, answered, result)
    decided.conflict = decided.conflict or finding.conflict
    return _unless_unreadable(leaf, ctx, finding, decided)


def _unless_unreadable(leaf: Leaf, ctx: EvalContext, finding: Finding, decided: CriterionResult) -> CriterionResult:
    """A criterion whose documentation holds an answer that cannot be read is not understood.

    The unreadable answer may be the clinician's correction of what decided the criterion
    (product-decisions.md §1: what cannot be read is not understood, never absent). Operators
    that merge answers with the record (prior sessions, conservative care) cannot tell which
    part of their finding the lost answer would change, so whatever decided the leaf, it is
    unknown and asked again, and its explanation names the answer. Unknown is monotone in the
    criteria's logic: it never turns an outcome into an approval. (The one place this rule lives:
    ``answer_result`` reads an unreadable answer as no answer.)
    """
    if not ctx.answers.any_unreadable:
        return decided
    lost = [q for q in _items_read(leaf, ctx) if ctx.answers.unreadable_source(q) is not None]
    if not lost:
        return decided
    question = ctx.carepath.questions.get(lost[0])
    decided.result = Tri.UNKNOWN
    decided.reason = f"the answer to “{question.text if question else lost[0]}” could not be read"
    decided.evidence = [*decided.evidence, f"{ctx.answers.unreadable_source(lost[0])}#{lost[0]}"]
    return decided


def _items_read(leaf: Leaf, ctx: EvalContext) -> list[str]:
    """The items a leaf asks, and those the CarePath's facts its operator reads take answers from (``svc.region``)."""
    linked: list[str] = list(leaf.questions)
    for fact in REGISTRY[leaf.op].facts:
        cfg = ctx.carepath.facts.get(fact)
        for key in ("answer", "answers"):
            found = cfg.get(key) if isinstance(cfg, dict) else None
            if isinstance(found, str):
                linked.append(found)
            elif isinstance(found, dict):
                linked += [v for v in found.values() if isinstance(v, str)]
    return linked


def _finding(leaf: Leaf, ctx: EvalContext) -> Finding:
    """The leaf's operator on this evaluation's record, once per evaluation.

    A leaf is decided once per kind that reaches it (a non-indication that an indication's group
    also names), and the operator never reads the kind: its Finding is the same each time. Later
    uses get their own evidence list, so no two criterion results share one.
    """
    found: Finding | None = ctx.findings.get(leaf.id)
    if found is None:
        found = ctx.findings[leaf.id] = REGISTRY[leaf.op].fn(ctx, leaf.args)
        return found
    return replace(found, evidence=list(found.evidence))


def _contradicts(leaf: Leaf, finding: Finding, answered: Tri, ctx: EvalContext) -> bool:
    """Whether a documentation answer contradicts a fact the record states (product-decisions.md §7).

    Not only when it would change the criterion: 20 visits answered for a 12-visit order
    contradicts the order even though both are under the limit.
    """
    if not finding.stated or leaf.answer is None:
        return False
    recorded = Tri.MET if finding.status == TRUE else Tri.NOT_MET
    if answered is not recorded:
        return True
    given = ctx.answers.first(leaf.answer.link_id)
    value = given.value if given is not None else None
    if finding.stated_value is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(float(value) - finding.stated_value) >= 0.5
    question = ctx.carepath.questions.get(leaf.answer.link_id)
    if finding.stated_codes and question is not None and isinstance(value, str):
        meaning = {
            str(option.get("code")): {coding_key(m) for m in arr(option.get("means"))} for option in question.options
        }
        stated = {o for o, codes in meaning.items() if codes & finding.stated_codes}
        return bool(stated) and value not in stated
    return False


def _precedence(
    leaf: Leaf, ctx: EvalContext, kind: str, finding: Finding, answered: Any, result: Any
) -> CriterionResult:
    """Record proof, then an answer, then record disproof, then doubt, then silence."""
    if finding.status == TRUE:
        return result(Tri.MET, finding.reason, finding.evidence)
    if answered is not None:
        return result(answered[0], answered[1], [answered[2]])
    if finding.status == FALSE:
        return result(Tri.NOT_MET, finding.reason, finding.evidence)
    if finding.status == SUGGESTIVE:
        return result(Tri.UNKNOWN, finding.reason, finding.evidence)
    return _silence(leaf, ctx, kind, finding, result)


def _silence(leaf: Leaf, ctx: EvalContext, kind: str, finding: Finding, result: Any) -> CriterionResult:
    policy = leaf.silence or GROUP_KINDS.get(kind, "unknown")
    checked = f" (checked: {finding.checked})" if finding.checked else ""
    if policy == "absent" and ctx.record_available:
        return result(Tri.NOT_MET, f"none recorded{checked}", finding.evidence)
    detail = finding.reason or "not documented"
    return result(Tri.UNKNOWN, f"{detail}{checked}", finding.evidence)


def answer_result(spec: AnswerSpec | None, ctx: EvalContext) -> tuple[Tri, str, str] | None:
    """Read the questionnaire answer that decides a leaf, if one was given."""
    if spec is None:
        return None
    question = ctx.carepath.questions.get(spec.link_id)
    answers = ctx.answers.get(spec.link_id)
    if not answers:
        return None
    first = answers[0]
    shown = ", ".join(str(a.value) for a in answers)
    reason = f"answered '{shown}' to “{question.text if question else spec.link_id}”"
    if spec.true_when is not None:
        hit = any(a.value in spec.true_when for a in answers)
        return (Tri.MET if hit else Tri.NOT_MET), reason, first.source
    if spec.compare is not None:
        value = first.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return (Tri.MET if compare(float(value), *spec.compare) else Tri.NOT_MET), reason, first.source
    if spec.weeks_since is not None:
        if not isinstance(first.value, date):
            return None
        weeks = (ctx.as_of - first.value).days / 7.0
        ok = compare(weeks, *spec.weeks_since)
        return (Tri.MET if ok else Tri.NOT_MET), f"{reason} ({weeks:.1f} weeks)", first.source
    if isinstance(first.value, bool):
        return (Tri.MET if first.value else Tri.NOT_MET), reason, first.source
    return None
