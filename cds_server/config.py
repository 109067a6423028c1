"""Settings: defaults here, then ``CDS_``-prefixed environment variables, then a test mapping.

Every setting is documented in docs/configuration.md; a test checks that the
two lists agree.
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    # Guidelines
    "CAREPATHS": [],  # CarePath files to load; empty = the shipped Neck Pain CarePath
    "CAREPATH_OVERRIDES": {},  # {"<carepath id>": {"<parameter>": value}}
    # Storage
    "DATABASE_URL": "sqlite:///cds-server.sqlite",
    # The payer
    "PAYER_NAME": "Example Health Plan",
    "PAYER_IDENTIFIERS": [],  # Coverage.payor identifier values this endpoint serves; empty = any
    "AUTO_APPROVAL": True,  # issue prior authorization when criteria are met (CarePaths can switch it off too)
    "AUTHORIZATION_VALID_DAYS": 180,
    "PUBLIC_BASE_URL": "",  # e.g. https://cds.payer.example; empty = taken from each request
    # FHIR access to the EHR
    "FHIR_TIMEOUT_SECONDS": 2.0,
    "FHIR_MAX_PAGES": 5,
    "FHIR_MAX_RESOURCES": 2000,
    "FHIR_MAX_PARALLEL": 6,
    # Requests
    "MAX_CONTENT_LENGTH": 5 * 1024 * 1024,
    "MAX_JSON_DEPTH": 64,
    "CRD_VERSIONS": ["2.0", "2.2"],
}


def settings_names() -> list[str]:
    """Return every setting name (for the documentation check)."""
    return sorted(DEFAULTS)
