"""Cards proposing a better order or a missing one (Propose Alternate Request, Identify Additional Orders).

The engine finds the alternatives the guideline offers for an order it does not approve; these cards
turn each into a suggestion the clinician accepts in one click, with the reason in the guideline's words.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from cds_server.engine import CarePath, OrderDecision, Tri
from cds_server.pipeline.card_base import CardContext, make_card
from cds_server.pipeline.card_detail import fact, fit, md
from cds_server.pipeline.card_text import PlainWords, plain_words
from fhir_mappings.codes import arr, concept_codes, obj


def _new_order(order: Mapping[str, Any], code: Mapping[str, Any], note: str | None = None) -> dict[str, Any]:
    """A new draft ServiceRequest like ``order`` but for another code (valid for the CRD profile)."""
    keep = (
        "subject",
        "requester",
        "authoredOn",
        "reasonCode",
        "reasonReference",
        "encounter",
        "insurance",
        "bodySite",
        "priority",
    )
    new: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": str(uuid.uuid4()),
        "status": "draft",
        "intent": "order",
        "code": {
            "coding": [{k: v for k, v in code.items() if k in ("system", "code", "display")}],
            "text": code.get("display", code["code"]),
        },
    }
    new.update({k: order[k] for k in keep if k in order})
    if note:
        new["note"] = [{"text": note}]
    return new


def alternative_cards(
    ctx: CardContext,
    decision: OrderDecision,
    order: Mapping[str, Any],
    others: Sequence[Mapping[str, Any]],
    carepath: CarePath,
) -> list[dict[str, Any]]:
    """Cards proposing the alternatives the engine found for this order."""
    ref = f"{order.get('resourceType')}/{order.get('id')}"
    words = plain_words(carepath)
    cards = []
    for alt in decision.alternatives:
        suggestion = _suggestion(alt, order, others, carepath)
        if suggestion is None:
            continue
        code = "clinical-reminder" if alt["kind"] == "companion" else "therapy-alternatives-opt"
        detail = f"{md(alt['text'])}.\n\n{_because(decision, alt['because'], words)}"
        cards.append(
            make_card(
                ctx,
                code,
                "info",
                alt["text"],
                ref,
                detail=detail,
                suggestions=[suggestion],
                selectionBehavior="at-most-one",
            )
        )
    return cards


def _because(decision: OrderDecision, criterion_ids: Sequence[str], words: PlainWords) -> str:
    """Why the guideline proposes it: the criteria that called for it, in its words, with the record's facts."""
    lines = []
    for criterion_id in criterion_ids:
        node = decision.criterion(criterion_id)
        if node is not None:
            state = "not met" if node.result is Tri.NOT_MET else "not documented"
            shown = fact(node, words)
            lines.append(f"- {md(node.text)}: {state}" + (f" — {md(shown)}" if shown else ""))
    return "\n".join(["Because:", *lines]) if lines else ""


def _suggestion(
    alt: Mapping[str, Any], order: Mapping[str, Any], others: Sequence[Mapping[str, Any]], carepath: CarePath
) -> dict[str, Any] | None:
    ref = f"{order.get('resourceType')}/{order.get('id')}"
    kind = alt["kind"]
    if kind == "replace":
        actions = [
            {"type": "delete", "description": f"Remove the draft order {ref}", "resourceId": ref},
            {
                "type": "create",
                "description": f"Order {alt['code'].get('display', alt['code']['code'])} instead",
                "resource": _new_order(order, alt["code"]),
            },
        ]
    elif kind == "companion":
        actions = [
            {
                "type": "create",
                "description": f"Add an order for {alt['code'].get('display', alt['code']['code'])}",
                "resource": _new_order(order, alt["code"]),
            }
        ]
    elif kind == "set-location":
        updated = dict(order)
        updated["locationCode"] = [
            {
                "coding": [{k: v for k, v in alt["location"].items() if k in ("system", "code", "display")}],
                "text": alt["location"].get("display", ""),
            }
        ]
        actions = [{"type": "update", "description": f"Perform {ref} in an outpatient setting", "resource": updated}]
    else:
        actions = _split_session(alt, order, others, carepath)
        if not actions:
            return None
    return {"label": fit(alt["text"], 80), "uuid": str(uuid.uuid4()), "isRecommended": True, "actions": actions}


def _split_session(
    alt: Mapping[str, Any], order: Mapping[str, Any], others: Sequence[Mapping[str, Any]], carepath: CarePath
) -> list[dict[str, Any]]:
    """Move the order carrying an extra-level code to a separate session: delete it, create it anew."""
    matcher = carepath.matcher((alt["codesFrom"],))
    for candidate in [order, *others]:
        if matcher.first_match(concept_codes(candidate.get("code"))):
            ref = f"{candidate.get('resourceType')}/{candidate.get('id')}"
            coding = next(c for c in candidate["code"]["coding"] if matcher.first_match(concept_codes({"coding": [c]})))
            new = _new_order(candidate, coding, str(alt["text"]))  # the note in the guideline's words (CarePath)
            return [
                {"type": "delete", "description": f"Remove {ref} from this session", "resourceId": ref},
                {"type": "create", "description": "Order that level for a separate session", "resource": new},
            ]
    return []


def suggestion_key(card: Mapping[str, Any]) -> str:
    """What a suggestion card does, ignoring generated ids: two cards with one key are duplicates."""
    parts = []
    for suggestion in arr(card.get("suggestions")):
        for action in arr(suggestion.get("actions")):
            resource = action.get("resource") or {}
            codes = [c.get("code") for c in obj(resource.get("code")).get("coding") or []]
            parts.append(f"{action['type']}:{action.get('resourceId', '')}:{codes}:{resource.get('locationCode', '')}")
    return "|".join(parts)
