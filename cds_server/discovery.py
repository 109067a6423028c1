"""The discovery document, derived from the hook registry and the loaded CarePaths."""

from __future__ import annotations

from typing import Any

from cds_server.cards import CARD_TYPES, DEFAULT_MAX_CARDS
from cds_server.invoke import Runtime
from cds_server.prefetch import templates_for
from hooks import SERVICES

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


def discovery_document(runtime: Runtime) -> dict[str, Any]:
    """Return ``{"services": [...]}`` for every registered service."""
    carepaths = ", ".join(
        f"{cp.title} {cp.version}" if "carepath" in cp.title.lower() else f"{cp.title} CarePath {cp.version}"
        for cp in runtime.carepaths
    )
    services = []
    for service in SERVICES.values():
        services.append(
            {
                "hook": service.hook,
                "id": service.id,
                "title": service.title,
                "description": f"{service.description} Guidelines: {carepaths}.",
                "prefetch": templates_for(service),
                "usageRequirements": "Send the patient's single active Coverage for this payer; history may be "
                "prefetched or read from fhirServer with the access token.",
                "extension": {
                    "davinci-crd.version": list(runtime.settings["CRD_VERSIONS"]),
                    "davinci-crd.configuration-options": CONFIGURATION_OPTIONS,
                },
            }
        )
    return {"services": services}
