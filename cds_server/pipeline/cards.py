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

from cds_server.engine import CarePath, OrderDecision, Outcome, Tri
from cds_server.pipeline.card_detail import (
    SUMMARY_LIMIT,
    Explanation,
    answers_needed,
    clause,
    explain,
    fact,
    fit,
    grouped_lines,
    md,
    met_line,
    next_step,
    outcome_headline,
    question_lines,
)
from cds_server.pipeline.card_text import PlainWords
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
_ORDER = "_order"  # a card's order while cards are built; removed before they are sent
_PLACEHOLDERS = {"unknown", "order", "service request", "?", "n/a", "none"}
DECISION_LINK = "This decision, criterion by criterion"


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


def _card(ctx: CardContext, code: str, indicator: str, summary: str, order_ref: str, **fields: Any) -> dict[str, Any]:
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": fit(summary),
        "indicator": indicator,
        "source": _source(ctx, code),
    }
    card.update({k: v for k, v in fields.items() if v})
    card[_ORDER] = order_ref  # which decision page to link (see ``apply_configuration``); never sent
    if ctx.several_orders:
        card["extension"] = {"davinci-crd.associated-resource": [order_ref]}
        if order_ref not in card.get("detail", ""):  # CRD dev-24: say which order, in words the user sees
            card["detail"] = (card.get("detail", "") + f"\n\n_Applies to the order {order_ref}._").lstrip()
    return card


# --- the decision card ------------------------------------------------------------------


def order_name(decision: OrderDecision, order_label: str) -> str:
    """The order as the CarePath names it (its service), never a client's placeholder display ("Unknown")."""
    if decision.service_title:
        return decision.service_title
    what = re.sub(r"\s*\([A-Za-z]+/[^)]*\)$", "", order_label).strip()
    return what if what and what.lower() not in _PLACEHOLDERS else "This order"


def checklist(carepath: CarePath, decision: OrderDecision, hook_allows_documentation: bool = True) -> str:
    """The decision in plain words: what fails or is missing first, then one line of what was met."""
    words = PlainWords(carepath)
    why = explain(decision)
    lines: list[str] = []
    if decision.conflicts:
        lines.append("**The record contradicts an answer** (the record decides; the plan reviews the request):")
        lines += [f"- {md(words.fact(c))}" for c in decision.conflicts]
        lines.append("")
    lines += [f"_{md(words.fact(n))}_" for n in decision.notes]
    lines += [""] if decision.notes else []
    if why.failing:
        lines.append(outcome_headline(decision))
        lines += grouped_lines(why.failing, "✗", words)
        lines.append("")
    if decision.outcome is Outcome.DOCUMENTATION_NEEDED:
        lines += _documentation(carepath, decision, why, words, hook_allows_documentation)
    good = met_line(why)
    if good:
        lines.append(good)
    return "\n".join(lines).strip()


def _documentation(
    carepath: CarePath, decision: OrderDecision, why: Explanation, words: PlainWords, asked_now: bool
) -> list[str]:
    """The unknown criteria with what the record shows, then the questions that settle them."""
    lines = grouped_lines([node for node in why.unknown if fact(node, words)], "?", words)
    if not decision.questions:
        head = "**The plan reviews the request:** part of the record could not be read:"
        return [head, *lines, ""] if lines else [head, ""]
    when = "in the documentation questionnaire" if asked_now else "when you sign"
    head = f"**{answers_needed(decision).capitalize()}** {when}:"
    return [head, *lines, *question_lines(carepath, decision), ""]


def decision_card(
    ctx: CardContext,
    carepath: CarePath,
    decision: OrderDecision,
    order_label: str,
    pa_number: str | None,
    hook_allows_documentation: bool,
    pa_expires: str | None = None,
) -> dict[str, Any]:
    """The decision card: the outcome and the one next step in the summary, the reasons in the detail."""
    name = order_name(decision, order_label)
    detail = checklist(carepath, decision, hook_allows_documentation)
    outcome = decision.outcome
    if outcome is Outcome.CRITERIA_MET:
        return _card(
            ctx,
            "guideline",
            "info",
            _met_summary(name, decision, pa_number, pa_expires),
            decision.order_ref,
            detail=detail,
        )
    if outcome is Outcome.DOCUMENTATION_NEEDED:
        return _card(
            ctx,
            "guideline",
            "info",
            _documentation_summary(name, decision, hook_allows_documentation),
            decision.order_ref,
            detail=detail,
        )
    why = explain(decision)
    code = "contraindication" if outcome is Outcome.CONTRAINDICATED else "off-guideline"
    summary = _warning_summary(name, decision, why)
    return _card(ctx, code, "warning", summary, decision.order_ref, detail=detail, overrideReasons=OVERRIDE_REASONS)


def _met_summary(name: str, decision: OrderDecision, pa_number: str | None, pa_expires: str | None) -> str:
    if decision.conflicts:
        return f"{name}: the record contradicts an answer; the plan reviews the request"
    if pa_number and pa_expires:
        return f"{name}: approved, prior authorization {pa_number} issued, valid until {pa_expires}"
    if pa_number:
        return f"{name}: approved, prior authorization {pa_number} issued"
    return f"{name}: meets the guideline; the plan reviews the prior authorization request"


def _documentation_summary(name: str, decision: OrderDecision, asked_now: bool) -> str:
    if not decision.questions:
        return f"{name}: the plan reviews the request; part of the record could not be read"
    if not asked_now:
        return f"{name}: {answers_needed(decision)} for prior authorization; the form comes when you sign"
    return f"{name}: {answers_needed(decision)} for prior authorization"


def _warning_summary(name: str, decision: OrderDecision, why: Explanation) -> str:
    """ "<order>: not approved — “<first failing criterion>” not met; <next step>", the criterion shortened to fit.

    The criterion is quoted in the guideline's words, so "No physical therapy in the past year" reads as
    the requirement, never as the cause.
    """
    contraindicated = decision.outcome is Outcome.CONTRAINDICATED
    verdict = "may not be appropriate" if contraindicated else "not approved"
    wrap = "on record: {}" if contraindicated else "“{}” not met"
    head, tail = f"{name}: {verdict} — ", f"; {next_step(decision)}"
    room = SUMMARY_LIMIT - len(head) - len(tail) - len(wrap) + 2
    if not why.failing or room < 20:
        return fit(f"{name}: {verdict}{tail}")
    return head + wrap.format(fit(clause(why.failing[0].text), room)) + tail


def outside_cohort_card(ctx: CardContext, decision: OrderDecision, order_label: str) -> dict[str, Any]:
    """A CarePath code with a diagnosis outside the cohort: tell the clinician it goes to ordinary review."""
    name = order_name(decision, order_label)
    detail = (
        f"The order's diagnosis is not one the {md(_guideline(decision))} guideline covers, so its criteria do not "
        "apply and the plan reviews the request. If the order is for neck pain, add the neck pain diagnosis "
        "as the order's reason and sign again."
    )
    return _card(
        ctx,
        "guideline",
        "info",
        f"{name}: prior authorization review needed; the diagnosis is outside the guideline",
        decision.order_ref,
        detail=detail,
    )


def _guideline(decision: OrderDecision) -> str:
    """The guideline's name as the engine's summary gives it ("… outside the Neck Pain CarePath cohort")."""
    found = re.search(r"outside the (.+?) CarePath", decision.summary)
    return found.group(1) if found else "clinical"


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
            "label": DECISION_LINK,
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
    words = PlainWords(carepath)
    cards = []
    for alt in decision.alternatives:
        suggestion = _suggestion(alt, order, others, carepath)
        if suggestion is None:
            continue
        code = "clinical-reminder" if alt["kind"] == "companion" else "therapy-alternatives-opt"
        detail = f"{md(alt['text'])}.\n\n{_because(decision, alt['because'], words)}"
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
    """The last step of every call: link each card to its decision, then apply the client's configuration.

    Drops card types switched off, and keeps at most ``max-cards`` (warnings and decisions first).
    """
    kept = [c for c in _linked(cards) if configuration.get(c["source"]["topic"]["code"], True) is not False]
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


def _linked(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every card of an order links its decision page (in the detail, so an Instructions card stays one).

    Only the order's reference card knows the page's signed address, so the others take it from there,
    before the configuration may drop the reference card itself.
    """
    pages = {
        card[_ORDER]: link["url"]
        for card in cards
        for link in card.get("links", [])
        if link.get("label") == DECISION_LINK and _ORDER in card
    }
    for card in cards:
        url = pages.get(card.pop(_ORDER, None))
        if url and "links" not in card:
            card["detail"] = (card.get("detail", "") + f"\n\n[{DECISION_LINK}]({url})").lstrip()
    return cards
