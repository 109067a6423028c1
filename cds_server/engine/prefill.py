"""What the record already answers in the documentation questionnaire (DTR pre-population).

Two sources, both from the same evaluation: leaf criteria the record decided
(their answer items), and derived facts that documentation items ask for
directly (onset date, conservative-care components and weeks, pain scores,
requested quantity, region). Silence is never pre-filled: "none recorded" is
for the clinician to confirm, not for us to answer.

Then, for items the record does not answer, the answers of earlier responses
to this CarePath's questionnaires (the ones the evaluation read), so that a
clinician is never asked again what they already documented. Their evidence is
the ``QuestionnaireResponse/...#linkId`` they came from; the record comes first,
so an answer never pre-fills over a fact the record states (product-decisions §7).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from cds_server.engine import facts
from cds_server.engine.context import EvalContext
from cds_server.engine.logic import Tri
from cds_server.engine.model import Leaf
from cds_server.engine.op_order import requested
from cds_server.engine.result import CriterionResult

Prefill = dict[str, dict[str, Any]]


def prefill(ctx: EvalContext, nodes: list[CriterionResult]) -> Prefill:
    """Return ``{linkId: {"value", "type", "evidence"}}`` for items the record answers.

    ``nodes``: every decided criterion, depth first (``CriterionResult.walk`` of each root).
    """
    found: Prefill = {}
    # Items an unknown criterion still needs. Another criterion the record settled may share the item
    # (imaging "exists" fills "imaging shows impingement"): pre-filled from that one, the unknown
    # criterion would be settled by a value nobody gave it, and a completed form would approve unread.
    doubted = frozenset(q for node in nodes if node.result is Tri.UNKNOWN for q in node.questions)
    for node in nodes:
        _from_leaf(ctx, node, found, doubted)
    _from_facts(ctx, found, doubted)
    _from_answers(ctx, found)
    return found


def _put(found: Prefill, link_id: str | None, value: Any, kind: str, evidence: list[str]) -> None:
    if link_id and link_id in found:
        return
    if link_id and value is not None and not any(e.startswith("QuestionnaireResponse/") for e in evidence):
        found[link_id] = {
            "value": value.isoformat() if isinstance(value, date) else value,
            "type": kind,
            "evidence": list(evidence),
        }


_ANSWERABLE = {"boolean", "choice", "open-choice", "integer", "decimal", "date", "string"}


def _from_answers(ctx: EvalContext, found: Prefill) -> None:
    """Earlier answers (most recent response first) to items the record left open."""
    if not ctx.answers:
        return
    for link_id, question in ctx.carepath.questions.items():
        if link_id in found or question.type not in _ANSWERABLE or ctx.answers.first(link_id) is None:
            continue
        answers = ctx.answers.get(link_id)
        values = [a.value.isoformat() if isinstance(a.value, date) else a.value for a in answers]
        found[link_id] = {
            "value": values if question.repeats else values[0],
            "type": question.type,
            "evidence": [answers[0].source],
        }


def _from_leaf(ctx: EvalContext, node: CriterionResult, found: Prefill, doubted: frozenset[str]) -> None:
    leaf = ctx.carepath.nodes.get(node.id)
    if not isinstance(leaf, Leaf) or leaf.answer is None or node.result is Tri.UNKNOWN:
        return
    if leaf.answer.link_id in doubted:
        return
    if node.reason.startswith("none recorded") or any(e.startswith("QuestionnaireResponse/") for e in node.evidence):
        return
    spec = leaf.answer
    if spec.true_when is not None:
        # Only an unambiguous choice can be filled: with several "true" options we cannot tell which.
        if node.result is Tri.MET and len(spec.true_when) == 1:
            _put(found, spec.link_id, next(iter(spec.true_when)), "choice", node.evidence)
    elif spec.compare is not None:
        if leaf.op == "order_quantity":
            amount = requested(ctx, leaf.args["measure"])
            _put(found, spec.link_id, int(amount) if amount is not None else None, "integer", [ctx.order.ref])
    elif spec.weeks_since is None:
        _put(found, spec.link_id, node.result is Tri.MET, "boolean", node.evidence)


def _from_facts(ctx: EvalContext, found: Prefill, doubted: frozenset[str]) -> None:
    """Items the record's derived facts answer (onset, conservative care, region, pain scores).

    ``doubted``: items of criteria the record left unknown. A total derived from the record
    (weeks of conservative care) is then only a lower bound (care elsewhere may be missing),
    not an answer: pre-filled, it would be counted as answered and confirmed unread.
    """
    cfg = ctx.carepath.facts
    if "symptomOnset" in cfg and cfg["symptomOnset"].get("answer"):
        onset = facts.symptom_onset(ctx)
        if onset:
            _put(found, cfg["symptomOnset"]["answer"], onset.day, "date", list(onset.evidence))
    if "conservativeCare" in cfg:
        _care(ctx, cfg["conservativeCare"], found, doubted)
    if "regions" in cfg and cfg["regions"].get("answer"):
        region = facts.order_region(ctx)
        if not region.source.startswith("default"):
            _put(found, cfg["regions"]["answer"], region.region, "choice", [region.source])


def _care(ctx: EvalContext, cfg: dict[str, Any], found: Prefill, doubted: frozenset[str]) -> None:
    care = facts.conservative_care(ctx)
    for name, component in care.components.items():
        links = cfg["components"][name].get("answers") or {}
        if component.status is Tri.MET and component.start is not None:
            _put(found, links.get("done"), True, "boolean", component.evidence)
            _put(found, links.get("start"), component.start, "date", component.evidence)
    if care.start is not None and cfg["answers"]["weeks"] not in doubted:
        _put(found, cfg["answers"]["weeks"], int(care.weeks(ctx.as_of) or 0), "integer", care.evidence)
    scores = facts.pain_scores(ctx)
    episode = [s for s in scores if care.start is None or s.day >= care.start]
    if len(episode) >= 2:
        _put(found, cfg["answers"]["painBaseline"], round(episode[0].value), "integer", [episode[0].ref])
        _put(found, cfg["answers"]["painNow"], round(episode[-1].value), "integer", [episode[-1].ref])
