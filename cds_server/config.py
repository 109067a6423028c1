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
    "PUBLIC_BASE_URL": "",  # e.g. https://cds.payer.example (or a list); required when outside clients are trusted
    # FHIR access to the EHR
    "FHIR_TIMEOUT_SECONDS": 2.0,
    "FHIR_MAX_PAGES": 5,
    "FHIR_MAX_RESOURCES": 2000,
    "FHIR_MAX_PARALLEL": 6,
    "FHIR_MAX_RESPONSE_BYTES": 10 * 1024 * 1024,  # the largest FHIR answer read; larger is a technical failure
    "CALL_BUDGET_SECONDS": 4.0,  # all FHIR reads of one hook call must fit in this (CRD asks 5 s at p90)
    "CIRCUIT_FAILURES": 5,  # consecutive failures that open the circuit to one FHIR server
    "CIRCUIT_COOLDOWN_SECONDS": 30.0,
    # Client authentication (CDS Hooks JWT)
    "AUTH_REQUIRED": True,  # false only for a local demo: every request is then trusted
    "TRUSTED_CLIENTS": [],  # [{"iss": ..., "jwks": {...} | "jwks_file": path, "jku": [urls], "tenants": [...]}]
    "JWT_ALGORITHMS": ["ES384", "RS384"],
    "JWT_LEEWAY_SECONDS": 30,
    "JWT_MAX_LIFETIME_SECONDS": 3600,
    "JWKS_CACHE_SECONDS": 3600,
    "LINK_SECRET": "",  # signs decision links in cards (empty: a secret made once and kept in the database)
    "LINK_TTL_DAYS": 90,
    "REDIS_URL": "",  # e.g. redis://127.0.0.1:6379/0: keep seen jti values in Redis instead of the database
    # Requests
    "MAX_CONTENT_LENGTH": 5 * 1024 * 1024,
    "MAX_JSON_DEPTH": 64,
    "MAX_ORDERS_PER_CALL": 50,  # orders one hook call may carry; more is refused (413) before any work
    "CRD_VERSIONS": ["2.0", "2.2"],
    # The test bench (/demo): a small EHR for trying the service; never on a production endpoint
    "DEMO_ENABLED": False,
    "DEMO_KEY_FILE": "demo-signing-key.pem",
    "CORS_ORIGINS": [],  # origins allowed to call from a browser, e.g. ["https://sandbox.cds-hooks.org"] or ["*"]
    # Logs
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "json",  # or "text"
}


def settings_names() -> list[str]:
    """Return every setting name (for the documentation check)."""
    return sorted(DEFAULTS)
