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
from collections.abc import Mapping
from typing import Any

from cds_server.engine import CarePath, OrderDecision, Outcome
from cds_server.pipeline.card_base import (
    CARD_TYPE_SYSTEMS,
    CARD_TYPES,
    DECISION_LINK,
    DEFAULT_MAX_CARDS,
    ORDER_KEY,
    OVERRIDE_REASONS,
    CardContext,
    make_card,
)
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
from cds_server.pipeline.card_orders import alternative_cards, suggestion_key
from cds_server.pipeline.card_text import PlainWords, plain_words, system_tail
from fhir_mappings.orders import Order

__all__ = [  # what the pipeline and discovery use of the card modules, in one place
    "CARD_TYPES",
    "CARD_TYPE_SYSTEMS",
    "DEFAULT_MAX_CARDS",
    "CardContext",
    "alternative_cards",
    "apply_configuration",
    "decision_card",
    "outside_cohort_card",
    "reference_card",
    "suggestion_key",
]
_PLACEHOLDERS = {"unknown", "order", "service request", "?", "n/a", "none"}  # client displays that name nothing

# --- the decision card ------------------------------------------------------------------


def order_name(decision: OrderDecision, order_label: str) -> str:
    """The order as the CarePath names it (its service), never a client's placeholder display ("Unknown")."""
    if decision.service_title:
        return decision.service_title
    what = re.sub(r"\s*\([A-Za-z]+/[^)]*\)$", "", order_label).strip()
    return what if what and what.lower() not in _PLACEHOLDERS else "This order"


def checklist(carepath: CarePath, decision: OrderDecision, hook_allows_documentation: bool = True) -> str:
    """The decision in plain words: what fails or is missing first, then one line of what was met."""
    words = plain_words(carepath)
    why = explain(decision)
    lines: list[str] = []
    if decision.conflicts:
        lines.append("**The record contradicts an answer** (the record decides; the plan reviews the request):")
        lines += [f"- {md(words.fact(c))}" for c in decision.conflicts]
        lines.append("")
    lines += [f"_{md(words.fact(n))}_" for n in decision.notes]
    lines += [""] if decision.notes else []
    # With documentation needed, a route not shown (no red flag recorded) is not a failure: a hollow mark.
    mark = "○" if decision.outcome is Outcome.DOCUMENTATION_NEEDED else "✗"
    failing = [outcome_headline(decision), *grouped_lines(why.failing, mark, words), ""] if why.failing else []
    if decision.outcome is Outcome.DOCUMENTATION_NEEDED:  # what to answer first; routes that failed after
        lines += _documentation(carepath, decision, why, words, hook_allows_documentation) + failing
    else:
        lines += failing
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
        return make_card(
            ctx,
            "guideline",
            "info",
            _met_summary(name, decision, pa_number, pa_expires),
            decision.order_ref,
            detail=detail,
        )
    if outcome is Outcome.DOCUMENTATION_NEEDED:
        return make_card(
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
    return make_card(ctx, code, "warning", summary, decision.order_ref, detail=detail, overrideReasons=OVERRIDE_REASONS)


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


def outside_cohort_card(
    ctx: CardContext, decision: OrderDecision, order_label: str, carepath: CarePath, page_url: str
) -> dict[str, Any]:
    """A CarePath code with a diagnosis outside the cohort: tell the clinician it goes to ordinary review."""
    name = order_name(decision, order_label)
    topic = carepath.title.lower()
    detail = (
        f"The order's diagnosis is not one the {md(carepath.title)} guideline covers, so its criteria do not "
        f"apply and the plan reviews the request. If the order is for {md(topic)}, add that diagnosis "
        f"as the order's reason and sign again.\n\n[{DECISION_LINK}]({page_url})"
    )
    return make_card(
        ctx,
        "guideline",
        "info",
        f"{name}: prior authorization review needed; the diagnosis is outside the guideline",
        decision.order_ref,
        detail=detail,
    )


def order_display(carepath: CarePath, order: Order) -> str | None:
    """What the CarePath calls the ordered code ("MRI cervical spinal canal, without contrast"), if it lists it."""
    words = plain_words(carepath)
    for system, code in sorted(order.billing_codes or order.codes):
        shown = words.display(system_tail(system), code)
        if shown:
            return shown
    return None


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
    return make_card(
        ctx,
        "guideline",
        "info",
        f"{decision.service_title}: guideline and decision details",
        decision.order_ref,
        links=links,
    )


# --- better and additional orders ----------------------------------------------------------


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
        card[ORDER_KEY]: link["url"]
        for card in cards
        for link in card.get("links", [])
        if link.get("label") == DECISION_LINK and ORDER_KEY in card
    }
    for card in cards:
        url = pages.get(card.pop(ORDER_KEY, None))
        if url and "links" not in card:
            card["detail"] = (card.get("detail", "") + f"\n\n[{DECISION_LINK}]({url})").lstrip()
    return cards
