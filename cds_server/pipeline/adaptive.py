"""Adaptive documentation forms (DTR STU2 adaptive questionnaires, SDC ``$next-question``).

The static Questionnaire lists everything a service can ask. The adaptive form
asks one criterion's items at a time, in the order the engine explains the
decision, and stops as soon as the answers so far settle it, or nothing is left
to ask. It reads the decision the service kept for the order (criterion by
criterion) rather than the record, which the service does not keep: criteria
the record decided stay decided, and only unknown criteria are re-read from the
answers with the engine's own reading of an answer. A criterion whose reading
needs the record as well as answers (conservative care computed from
encounters) stays unknown here; the form then asks on, never settles early, and
the next sign decides with the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from types import SimpleNamespace
from typing import Any

from cds_server.engine import CarePath, Tri
from cds_server.engine.criteria import answer_result
from cds_server.engine.logic import all_of, any_of
from cds_server.engine.model import Leaf
from cds_server.pipeline.dtr_response import answers_for
from fhir_mappings.questionnaire import Answers

ADAPTIVE = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-questionnaireAdaptive"
ADAPT_PROFILE = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-questionnaire-adapt"
ASSERTION_SYSTEM = (
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information#coverage-assertion-id"
)
_REQUEST_LABELS = {"population", "indication", "subsequent-request", "frequency", "site-of-service"}


@dataclass(frozen=True)
class State:
    """What the answers so far make of a kept decision: its outcome and the items that could still settle it."""

    outcome: str
    batches: list[list[str]]  # the items of each still-unknown criterion, in the order the engine explains them

    @property
    def settled(self) -> bool:
        """Whether the answers so far decide the order (documentation is no longer needed)."""
        return self.outcome != "documentation-needed"


def adaptive_questionnaire(static: Mapping[str, Any], assertion_id: str, service_base: str) -> dict[str, Any]:
    """The empty adaptive Questionnaire a package offers next to the static one (no items yet).

    It names the coverage assertion it belongs to (its identifier), so that
    ``$next-question`` finds the decision; ``derivedFrom`` says whose items it
    asks, so that the final response counts as answers to that Questionnaire.
    """
    return {
        "resourceType": "Questionnaire",
        "id": f"{static['id']}-adaptive",
        "meta": {"profile": [ADAPT_PROFILE]},
        "extension": [{"url": ADAPTIVE, "valueUrl": service_base}],
        "identifier": [{"system": ASSERTION_SYSTEM, "value": assertion_id}],
        "url": f"{static['url']}-adaptive",
        "version": static["version"],
        "name": f"{static['name']}Adaptive",
        "title": f"{static['title']} (adaptive)",
        "status": "active",
        "subjectType": ["Patient"],
        "derivedFrom": [f"{static['url']}|{static['version']}"],
    }


def assess(decision: Mapping[str, Any], carepath: CarePath, answers: Answers) -> State:
    """Re-read the kept decision's unknown criteria with these answers and combine as the engine does."""
    as_of = date.fromisoformat(decision["evaluationDate"])
    ctx = SimpleNamespace(answers=answers, carepath=carepath, as_of=as_of)
    batches: list[list[str]] = []
    results = []
    seen: dict[int, Tri] = {}
    for root in decision.get("criteria") or []:
        value = _reread(root, ctx, seen)
        _unknown_items(root, seen, batches)
        if root.get("kind") != "selection":
            results.append((root.get("kind"), value))
    return State(_outcome(results), batches)


def _open_to_answers(node: Mapping[str, Any]) -> bool:
    """Whether an answer can still change this kept leaf, as it would in the engine.

    An answer outranks the record's silence ("none recorded") and an earlier
    answer, never the record's proof: unknown leaves, silent non-indications and
    leaves an earlier response decided are re-read; the rest stays as kept.
    """
    result = Tri(node["result"])
    evidence = node.get("evidence") or []
    earlier = bool(evidence) and all(str(e).startswith("QuestionnaireResponse/") for e in evidence)
    silent = result is Tri.NOT_MET and str(node.get("reason", "")).startswith("none recorded")
    return result is Tri.UNKNOWN or silent or earlier


def _reread(node: Mapping[str, Any], ctx: Any, seen: dict[int, Tri]) -> Tri:
    """The node's result with these answers (kept in ``seen`` by node identity)."""
    children = node.get("children") or []
    value = Tri(node["result"])
    if not children and _open_to_answers(node):
        leaf = ctx.carepath.nodes.get(node["id"])
        read = answer_result(leaf.answer, ctx) if isinstance(leaf, Leaf) else None
        value = Tri(read[0]) if read is not None and read[0] is not Tri.UNKNOWN else value
    elif children:
        values = [_reread(child, ctx, seen) for child in children]
        logic = node.get("logic")
        if logic == "all":
            value = all_of(values)
        elif logic == "any":
            value = any_of(values)
        else:
            value = values[0].negate() if logic == "not" else values[0]
    seen[id(node)] = value
    return value


def _unknown_items(node: Mapping[str, Any], seen: Mapping[int, Tri], batches: list[list[str]]) -> None:
    """The items of unknown leaves under unknown nodes: what could still change the outcome."""
    if seen[id(node)] is not Tri.UNKNOWN:
        return
    if node.get("questions"):
        batches.append(list(node["questions"]))
    for child in node.get("children") or []:
        _unknown_items(child, seen, batches)


def _outcome(results: Iterable[tuple[str | None, Tri]]) -> str:
    """The service outcome by product-decisions.md §2 (non-indication present first, then request criteria).

    "Not met" is settled only once no non-indication is unknown: one found later
    would make the order contraindicated, which outranks it.
    """
    results = list(results)
    if any(kind == "non-indication" and v is Tri.MET for kind, v in results):
        return "contraindicated"
    open_ni = any(kind == "non-indication" and v is Tri.UNKNOWN for kind, v in results)
    if not open_ni and any(kind in _REQUEST_LABELS and v is Tri.NOT_MET for kind, v in results):
        return "not-met"
    if any(v is Tri.UNKNOWN for _, v in results):
        return "documentation-needed"
    return "criteria-met"


def next_batch(state: State, asked: set[str], carepath: CarePath) -> list[str]:
    """The next criterion's items not yet asked, each preceded by the items its enableWhen depends on."""
    for batch in state.batches:
        fresh = [q for q in batch if q not in asked]
        if fresh:
            out: list[str] = []
            for link_id in fresh:
                question = carepath.questions.get(link_id)
                needs = [c["question"] for c in question.enable_when] if question else []
                out += [q for q in [*needs, link_id] if q not in asked and q not in out]
            return out
    return []


def step(
    response: Mapping[str, Any],
    contained: Mapping[str, Any],
    decision: Mapping[str, Any],
    carepath: CarePath,
    items: Mapping[str, Mapping[str, Any]],
    system: str,
) -> dict[str, Any]:
    """One ``$next-question`` turn: the response with the next items appended, or completed.

    ``items`` are the static Questionnaire's items by linkId (the definitions to
    append); what the record or an earlier response answers is pre-filled
    (``auto``), so the clinician confirms it instead of typing it again.
    """
    asked = {i["linkId"] for i in _flatten(contained.get("item") or [])}
    state = assess(decision, carepath, Answers([response], carepath.answer_kinds))
    batch = [] if state.settled else next_batch(state, asked, carepath)
    out = dict(response)
    if not batch:
        out["status"] = "completed"
        return out
    needed = {q for b in state.batches for q in b}
    new_items = [{**_definition(items[q]), **({"required": True} if q in needed else {})} for q in batch]
    out["contained"] = [
        {**contained, "item": [*(contained.get("item") or []), *new_items]} if r is contained else r
        for r in response.get("contained") or []
    ]
    prefill = decision.get("prefill") or {}
    filled = [
        {"linkId": q, "text": items[q].get("text", ""), "answer": answers_for(prefill[q], system)}
        for q in batch
        if q in prefill
    ]
    out["item"] = [*(response.get("item") or []), *filled]
    out["status"] = "in-progress"
    return out


def _definition(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "required"}


def _flatten(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for item in items:
        out.append(item)
        out += _flatten(item.get("item") or [])
    return out


def item_definitions(questionnaire: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The static Questionnaire's questions by linkId (its top-level items are sections, never asked)."""
    sections = questionnaire.get("item") or []
    return {i["linkId"]: i for section in sections for i in section.get("item") or []}
