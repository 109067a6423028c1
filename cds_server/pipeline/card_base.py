"""What every card shares: its types, source, identity and the order it is about (CRD §3.7).

A card carries the order it concerns under a private key while a call's cards are built, so the
last step (``cards.apply_configuration``) can link each card to that order's decision page; the
key is removed before any card is sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_server.pipeline.card_detail import fit

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
ORDER_KEY = "_order"  # a card's order while cards are built; removed before they are sent
DECISION_LINK = "This decision, criterion by criterion"


@dataclass(frozen=True)
class CardContext:
    """What every card of one call needs to know."""

    payer: str
    version: str
    base_url: str
    several_orders: bool
    decision_url: Callable[[str], str]  # the (signed) link to a decision page
    order_names: Mapping[str, str] = field(default_factory=dict)  # order reference -> what a clinician calls it


def source(ctx: CardContext, code: str) -> dict[str, Any]:
    return {
        "label": ctx.payer,
        "topic": {
            "system": CARD_TYPE_SYSTEMS.get(ctx.version, CARD_TYPE_SYSTEMS["2.2"]),
            "code": code,
            "display": CARD_TYPES[code][0],
        },
    }


def make_card(
    ctx: CardContext, code: str, indicator: str, summary: str, order_ref: str, **fields: Any
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": fit(summary),
        "indicator": indicator,
        "source": source(ctx, code),
    }
    card.update({k: v for k, v in fields.items() if v})
    card[ORDER_KEY] = order_ref  # which decision page to link (see ``apply_configuration``); never sent
    if ctx.several_orders:
        card["extension"] = {"davinci-crd.associated-resource": [order_ref]}
        if order_ref not in card.get("detail", ""):  # CRD dev-24: say which order, in words the user sees
            named = ctx.order_names.get(order_ref)
            which = f"for {named} ({order_ref})" if named else order_ref
            card["detail"] = (card.get("detail", "") + f"\n\n_Applies to the order {which}._").lstrip()
    return card
