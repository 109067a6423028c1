"""Cards for clinicians, built from decisions (CRD response types, cds-hooks-crd.md §3.7-3.8).

Per order: one checklist card (Instructions: no links, no suggestions) that
says what to do and shows every criterion with the evidence that decided it;
cards proposing a better order (Propose Alternate Request) or a missing
prerequisite (Identify Additional Orders); and one External Reference card
linking the guideline page and the decision page. Card text is plain words
for a busy clinician: criterion ids appear only in the detail, never in a
summary.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cds_server.engine import CarePath, CriterionResult, OrderDecision, Outcome, Tri
from fhir_mappings.codes import arr, obj

CARD_TYPE_SYSTEMS = {
    "2.0": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
    "2.2": "http://terminology.hl7.org/CodeSystem/cdshooks-card-type",
}
# card type code -> (configuration option name, description); discovery offers one boolean per type.
CARD_TYPES: dict[str, tuple[str, str]] = {
    "guideline": (
        "Guideline checklist and links",
        "Which guideline criteria the order meets, with the evidence, and links to the guideline and the decision.",
    ),
    "off-guideline": ("Unmet criteria", "Warns when an order does not meet the guideline, naming the unmet criteria."),
    "contraindication": ("Contraindications", "Warns when the guideline says the service may not be appropriate."),
    "therapy-alternatives-opt": (
        "Better alternatives",
        "Proposes an order the guideline prefers, ready to accept in place of the draft.",
    ),
    "clinical-reminder": ("Prerequisite orders", "Proposes orders the guideline requires first, as companion orders."),
}
DEFAULT_MAX_CARDS = 10  # the advertised default of the max-cards configuration option
OVERRIDE_SYSTEM = "http://cds.payer.example/fhir/CodeSystem/carepath-override-reason"
OVERRIDE_REASONS = [
    {
        "system": OVERRIDE_SYSTEM,
        "code": "documented-elsewhere",
        "display": "The criteria are documented outside this record",
    },
    {
        "system": OVERRIDE_SYSTEM,
        "code": "clinical-judgment",
        "display": "Clinical judgment: the benefit outweighs the guideline",
    },
    {"system": OVERRIDE_SYSTEM, "code": "urgent", "display": "Urgent: cannot wait for review"},
    {"system": OVERRIDE_SYSTEM, "code": "patient-preference", "display": "Patient preference after discussion"},
]
# Plain marks that every EHR font has (no emoji).
MARK = {Tri.MET: "✓ met", Tri.NOT_MET: "✗ not met", Tri.UNKNOWN: "? not documented"}
NI_MARK = {Tri.MET: "✗ present", Tri.NOT_MET: "✓ not present", Tri.UNKNOWN: "? not documented"}


@dataclass(frozen=True)
class CardContext:
    """What every card of one call needs to know."""

    payer: str
    version: str
    base_url: str
    several_orders: bool
    decision_url: Callable[[str], str]  # the (signed) link to a decision page


def _source(ctx: CardContext, code: str) -> dict[str, Any]:
    return {
        "label": ctx.payer,
        "topic": {
            "system": CARD_TYPE_SYSTEMS.get(ctx.version, CARD_TYPE_SYSTEMS["2.2"]),
            "code": code,
            "display": CARD_TYPES[code][0],
        },
    }


def _clip(text: str, limit: int = 139) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _md(text: str) -> str:
    """Make record text safe inside markdown: no raw HTML, no accidental emphasis or links."""
    text = text.replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\\\`*_\[\]|])", r"\\\1", text)


def _card(ctx: CardContext, code: str, indicator: str, summary: str, order_ref: str, **fields: Any) -> dict[str, Any]:
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": _clip(summary),
        "indicator": indicator,
        "source": _source(ctx, code),
    }
    card.update({k: v for k, v in fields.items() if v})
    if ctx.several_orders:
        card["extension"] = {"davinci-crd.associated-resource": [order_ref]}
        if order_ref not in card.get("detail", ""):  # CRD dev-24: say which order, in words the user sees
            card["detail"] = (card.get("detail", "") + f"\n\n_Applies to {order_ref}._").lstrip()
    return card


# --- the checklist ------------------------------------------------------------------


def checklist(carepath: CarePath, decision: OrderDecision, order_label: str) -> str:
    """Render the decision as a markdown checklist: every top criterion, its evidence and its source."""
    lines = [
        f"**{_md(order_label)}** — {carepath.title} CarePath {carepath.version}: "
        f"**{_OUTCOME_WORDS[decision.outcome]}**",
        "",
    ]
    if decision.conflicts:
        lines.append("**The record contradicts documentation** (the record decides; the plan reviews the request):")
        lines += [f"- {_md(c)}" for c in decision.conflicts]
        lines.append("")
    if decision.notes:
        lines += [f"_{_md(n)}_" for n in decision.notes]
        lines.append("")
    for root in decision.criteria:
        if root.kind == "selection":
            continue
        lines.append(
            f"**{_md(_GROUP_TITLES.get(root.kind, root.kind))}** ({root.id}): "
            f"{(NI_MARK if root.kind == 'non-indication' else MARK)[root.result]}"
        )
        for node in root.children if root.logic in ("all", "any", "not") else [root]:
            lines.extend(_criterion_lines(node, 0))
        lines.append("")
    if decision.questions:
        lines.append("**To complete the request, answer in the documentation questionnaire:**")
        lines += [f"- {_md(carepath.questions[q].text)}" for q in decision.questions if q in carepath.questions]
        lines.append("")
    return "\n".join(lines).strip()


def _criterion_lines(node: CriterionResult, depth: int) -> list[str]:
    marks = NI_MARK if node.kind == "non-indication" else MARK
    evidence = f" — evidence: {', '.join(node.evidence[:4])}" if node.evidence else ""
    section = _md(node.cite.split(" › ", 1)[-1])
    indent = "  " * depth
    lines = [
        f"{indent}- {marks[node.result]}: {_md(node.text)} — {_md(node.reason)}{evidence} _({node.id}; {section})_"
    ]
    if depth < 2 and node.logic in ("all", "any"):
        children = node.children
        if node.logic == "any" and node.result is Tri.MET:
            children = [c for c in children if c.result is Tri.MET]  # the route that met it
        for child in children:
            lines.extend(_criterion_lines(child, depth + 1))
    return lines


_OUTCOME_WORDS = {
    Outcome.CRITERIA_MET: "criteria met",
    Outcome.NOT_MET: "criteria not met",
    Outcome.CONTRAINDICATED: "may not be appropriate",
    Outcome.DOCUMENTATION_NEEDED: "documentation needed",
    Outcome.NOT_APPLICABLE: "outside this guideline",
}
_GROUP_TITLES = {
    "population": "Patient",
    "indication": "Indications",
    "subsequent-request": "Repeat requests",
    "frequency": "Number and technique",
    "site-of-service": "Setting",
    "non-indication": "Non-indications",
}


def _sentence_case(text: str) -> str:
    """Lower the first letter to run a criterion on in a sentence, but never an acronym ("CT myelogram")."""
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        return text[0].lower() + text[1:]
    return text


def _first_texts(decision: OrderDecision, ids: Sequence[str], limit: int = 2) -> str:
    texts = []
    for criterion_id in ids[:limit]:
        node = decision.criterion(criterion_id)
        if node:
            texts.append(_sentence_case(node.text))
    return "; ".join(texts)


def decision_card(
    ctx: CardContext,
    carepath: CarePath,
    decision: OrderDecision,
    order_label: str,
    pa_number: str | None,
    hook_allows_documentation: bool,
) -> dict[str, Any]:
    """The checklist card: what to do, and why, criterion by criterion."""
    title = decision.service_title or order_label
    detail = checklist(carepath, decision, order_label)
    outcome = decision.outcome
    if outcome is Outcome.CRITERIA_MET:
        summary = f"{title}: meets the guideline" + (f"; prior authorization {pa_number} issued" if pa_number else "")
        if decision.conflicts:
            summary = f"{title}: the record contradicts an answer; the plan reviews the request"
        return _card(ctx, "guideline", "info", summary, decision.order_ref, detail=detail)
    if outcome is Outcome.DOCUMENTATION_NEEDED and not decision.questions:
        summary = f"{title}: the plan reviews the request (the record holds data that could not be read)"
        return _card(ctx, "guideline", "info", summary, decision.order_ref, detail=detail)
    if outcome is Outcome.DOCUMENTATION_NEEDED:
        n = len(decision.questions)
        ask = (
            f"answer {n} question{'s' if n != 1 else ''} to complete prior authorization"
            if hook_allows_documentation
            else "documentation will be requested when you sign"
        )
        return _card(ctx, "guideline", "info", f"{title}: {ask}", decision.order_ref, detail=detail)
    if outcome is Outcome.CONTRAINDICATED:
        summary = f"{title} may not be appropriate: {_first_texts(decision, decision.failing)}"
        return _card(
            ctx,
            "contraindication",
            "warning",
            summary,
            decision.order_ref,
            detail=detail,
            overrideReasons=OVERRIDE_REASONS,
        )
    summary = f"{title} does not meet the guideline: {_first_texts(decision, decision.failing)}"
    return _card(
        ctx, "off-guideline", "warning", summary, decision.order_ref, detail=detail, overrideReasons=OVERRIDE_REASONS
    )


def outside_cohort_card(ctx: CardContext, decision: OrderDecision, order_label: str) -> dict[str, Any]:
    """A CarePath code with a diagnosis outside the cohort: tell the clinician it goes to ordinary review."""
    detail = (
        f"**{_md(order_label)}**: {_md(decision.summary)}. The guideline's criteria do not apply to this "
        "diagnosis, so the request is reviewed by the plan (prior authorization needed). If the order is "
        "for neck pain, add the diagnosis that shows it."
    )
    return _card(
        ctx,
        "guideline",
        "info",
        f"{decision.service_title or order_label}: prior authorization review needed (diagnosis outside the guideline)",
        decision.order_ref,
        detail=detail,
    )


def reference_card(ctx: CardContext, carepath: CarePath, decision: OrderDecision, assertion_id: str) -> dict[str, Any]:
    """Links to the guideline section that decides the order and to the decision page."""
    base = ctx.base_url.rstrip("/")
    links = [
        {
            "label": f"{carepath.title} guideline: {decision.service_title}",
            "type": "absolute",
            "url": f"{base}/carepaths/{carepath.id}#{decision.service_id}",
        }
    ]
    if decision.failing:
        first = decision.failing[0]
        links.append(
            {
                "label": "The criterion that decided it",
                "type": "absolute",
                "url": f"{base}/carepaths/{carepath.id}#{first}",
            }
        )
    links.append(
        {
            "label": "This decision, criterion by criterion",
            "type": "absolute",
            "url": ctx.decision_url(assertion_id),
        }
    )
    return _card(
        ctx,
        "guideline",
        "info",
        f"{decision.service_title}: guideline and decision details",
        decision.order_ref,
        links=links,
    )


# --- better and additional orders ----------------------------------------------------------


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
    cards = []
    for alt in decision.alternatives:
        suggestion = _suggestion(alt, order, others, carepath)
        if suggestion is None:
            continue
        code = "clinical-reminder" if alt["kind"] == "companion" else "therapy-alternatives-opt"
        section = _md(alt["cite"].split(" › ", 1)[-1])
        detail = f"{_md(alt['text'])}. Guideline: _{section}_ (because of {', '.join(alt['because'])})."
        cards.append(
            _card(
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
    return {"label": _clip(alt["text"], 80), "uuid": str(uuid.uuid4()), "isRecommended": True, "actions": actions}


def _split_session(
    alt: Mapping[str, Any], order: Mapping[str, Any], others: Sequence[Mapping[str, Any]], carepath: CarePath
) -> list[dict[str, Any]]:
    """Move the order carrying an extra-level code to a separate session: delete it, create it anew."""
    from fhir_mappings.codes import concept_codes

    matcher = carepath.matcher((alt["codesFrom"],))
    for candidate in [order, *others]:
        if matcher.first_match(concept_codes(candidate.get("code"))):
            ref = f"{candidate.get('resourceType')}/{candidate.get('id')}"
            coding = next(c for c in candidate["code"]["coding"] if matcher.first_match(concept_codes({"coding": [c]})))
            new = _new_order(candidate, coding, "Separate session: at most two facet levels per session")
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


# --- selection and limits -------------------------------------------------------------


def apply_configuration(cards: list[dict[str, Any]], configuration: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Drop card types switched off, and keep at most ``max-cards`` (warnings and decisions first)."""
    kept = [c for c in cards if configuration.get(c["source"]["topic"]["code"], True) is not False]
    limit = configuration.get("max-cards", DEFAULT_MAX_CARDS)
    if isinstance(limit, int) and not isinstance(limit, bool):
        order = {
            "contraindication": 0,
            "off-guideline": 0,
            "guideline": 1,
            "therapy-alternatives-opt": 2,
            "clinical-reminder": 3,
        }
        ranked = sorted(
            enumerate(kept),
            key=lambda p: (
                0 if p[1]["indicator"] == "warning" else 1,
                order.get(p[1]["source"]["topic"]["code"], 4),
                p[0],
            ),
        )
        keep_ids = {id(c) for _, c in ranked[:limit]}
        kept = [c for c in kept if id(c) in keep_ids]
    return kept
