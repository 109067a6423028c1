"""What one hook call carries through the stages: the app's long-lived runtime, the call, what it decided.

Every stage module of the pipeline takes and returns these; none of them holds state of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import requests

from cds_server import links
from cds_server.engine import CarePath, OrderDecision
from cds_server.pipeline import coverage_info as ci
from cds_server.pipeline.coverage import CoverageCheck
from cds_server.pipeline.fhir_client import CircuitBreaker, FhirClient
from cds_server.records.store import Store
from fhir_mappings.orders import Order
from hooks import HookService, OrderTarget


@dataclass
class Runtime:
    """Long-lived parts shared by every call of one app."""

    carepaths: list[CarePath]
    store: Store
    settings: Mapping[str, Any]
    session: requests.Session
    pool: ThreadPoolExecutor
    clock: Callable[[], datetime]
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    link_secret: str | None = None  # signs decision links (``links``) when client authentication is on
    id_key: str = ""  # makes assertion ids unguessable from the request (``coverage_info.assertion_id``)

    def decision_url(self, base: str, assertion_id: str) -> str:
        """The decision page for an assertion: a signed, expiring link when pages need authentication."""
        ttl = int(self.settings.get("LINK_TTL_DAYS", 90)) * 86400
        return links.decision_url(base, assertion_id, self.link_secret, ttl)


@dataclass
class Call:
    """One hook call as it moves through the stages."""

    service: HookService
    body: Mapping[str, Any]
    now: datetime
    configuration: dict[str, Any] = field(default_factory=dict)
    version: str = "2.2"
    client: FhirClient | None = None
    started: float = field(default_factory=time.monotonic)
    decide_ms: float | None = None  # time the engine took for this call's orders, kept with each assertion
    requester: Mapping[str, Any] = field(default_factory=dict)  # the verified token's claims (auth on)

    @property
    def context(self) -> Mapping[str, Any]:
        return self.body["context"]  # type: ignore[no-any-return]

    @property
    def today(self) -> date:
        return self.now.date()

    def option(self, code: str, default: Any) -> Any:
        value = self.configuration.get(code, default)
        return value if type(value) is type(default) else default


@dataclass
class OrderResult:
    """What the call decided for one order."""

    target: OrderTarget
    order: Order
    decision: OrderDecision | None
    assertion: ci.Assertion
    new: bool
    decision_dict: dict[str, Any] | None = None  # ``decision.to_dict()``, made once: assertion id and record


@dataclass
class CallResult:
    """Everything a call produced: the response body and what the HTTP layer logs."""

    response: dict[str, Any]
    results: list[OrderResult]
    coverage: CoverageCheck | None
