"""The discovery document, derived from the hook registry and the loaded CarePaths."""

from __future__ import annotations

from typing import Any

from cds_server.pipeline.call import Runtime
from cds_server.pipeline.options import CONFIGURATION_OPTIONS
from cds_server.pipeline.prefetch import templates_for
from hooks import SERVICES


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
