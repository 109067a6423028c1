"""The CRD configuration options this service offers (cds-hooks-crd.md §3.6.1).

Declared once: discovery publishes them and the hook call checks a client's
``davinci-crd.configuration`` against the types declared here.
"""

from __future__ import annotations

from typing import Any

from cds_server.pipeline.cards import CARD_TYPES, DEFAULT_MAX_CARDS

# CRD configuration options (cds-hooks-crd.md §3.6.1): one boolean per response type the
# service returns, plus max-cards. Codes come from the CRD card-type code system.
CONFIGURATION_OPTIONS: list[dict[str, Any]] = [
    {
        "code": "coverage-info",
        "type": "boolean",
        "name": "Coverage information",
        "description": "Return coverage information (covered, prior authorization, documentation) on each order.",
        "default": True,
    },
    *[
        {"code": code, "type": "boolean", "name": name, "description": description, "default": True}
        for code, (name, description) in CARD_TYPES.items()
    ],
    {
        "code": "max-cards",
        "type": "integer",
        "name": "Maximum cards",
        "description": "Return at most this many cards per call.",
        "default": DEFAULT_MAX_CARDS,
    },
]
