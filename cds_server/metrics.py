"""The service's Prometheus metrics, defined once for every layer that counts something.

The hook pipeline counts calls to EHR FHIR servers and the web layer counts hook
calls and decisions; both import the collectors from here so that neither has to
import the other (``cds_server.web.observability`` exposes them over HTTP).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CALLS = Counter("cds_hook_calls_total", "Hook calls by service and HTTP status", ["service", "status"])
LATENCY = Histogram(
    "cds_hook_latency_seconds",
    "Hook call latency by hook",
    ["hook"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
OUTCOMES = Counter("cds_decisions_total", "Decisions by CarePath service and outcome", ["service", "outcome"])
FHIR_LATENCY = Histogram(
    "cds_fhir_fetch_seconds", "Latency of calls to EHR FHIR servers", buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)
)
FHIR_FAILURES = Counter("cds_fhir_fetch_failures_total", "Failed calls to EHR FHIR servers by kind", ["kind"])
