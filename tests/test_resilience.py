"""Slow, failing and lying FHIR servers: the service answers in time, never guesses, never hangs."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_server.scenarios import SCENARIO_DIR, hook_request, load_scenario
from cds_server.web.app import create_app
from tests import conformance
from tests.conftest import HostileFhir

NOW = datetime(2024, 3, 20, 15, 0, tzinfo=UTC)
SIGN = "/cds-services/crd-order-sign"


def make_app(tmp_path: Path, **extra: Any) -> Flask:
    config = {
        "AUTH_REQUIRED": False,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.sqlite'}",
        "CLOCK": lambda: NOW,
        "FHIR_TIMEOUT_SECONDS": 2.0,
        "CALL_BUDGET_SECONDS": 1.0,
    } | extra
    return create_app(config)


def request_against(base: str, keep: tuple[str, ...] = ("coverage", "patient")) -> dict[str, Any]:
    body = hook_request(load_scenario(SCENARIO_DIR / "mri/met-failed-conservative-care.json"))
    body["prefetch"] = {k: v for k, v in body["prefetch"].items() if k in keep}
    body["fhirServer"] = base
    body["fhirAuthorization"] = {
        "access_token": "t",
        "token_type": "Bearer",
        "expires_in": 30,
        "scope": "user/*.read",
        "subject": "cds",
    }
    return body


def covered(payload: dict[str, Any]) -> str:
    ext = payload["systemActions"][0]["resource"]["extension"][-1]
    return next(p["valueCode"] for p in ext["extension"] if p["url"] == "covered")


def timed_post(app: Flask, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    response = app.test_client().post(SIGN, json=body)
    return response.status_code, response.get_json(), time.monotonic() - started


def test_a_slow_server_cannot_hold_the_call_past_its_budget(tmp_path: Path, hostile_fhir: HostileFhir) -> None:
    app = make_app(tmp_path)
    body = request_against(hostile_fhir.base("slow/3000"))
    status, payload, elapsed = timed_post(app, body)
    assert status == 200 and covered(payload) == "indeterminate"
    assert elapsed < 2.0, f"took {elapsed:.2f}s with a 1.0s budget"
    assert conformance.check_response(body, payload) == []


def test_a_slow_server_and_no_prefetched_coverage_is_412_in_time(tmp_path: Path, hostile_fhir: HostileFhir) -> None:
    app = make_app(tmp_path)
    status, payload, elapsed = timed_post(app, request_against(hostile_fhir.base("slow/3000"), keep=()))
    assert status == 412 and conformance.check_outcome(payload) == []
    assert elapsed < 2.0


@pytest.mark.parametrize("mode", ["status/500", "status/503", "status/401", "garbage", "html", "notfhir"])
def test_failing_or_lying_servers_give_a_technical_answer(tmp_path: Path, hostile_fhir: HostileFhir, mode: str) -> None:
    app = make_app(tmp_path)
    body = request_against(hostile_fhir.base(mode))
    status, payload, _ = timed_post(app, body)
    assert status == 200, payload
    assert covered(payload) == "indeterminate"
    reason = json.dumps(payload)
    assert "technical" in reason and conformance.check_response(body, payload) == []


def test_the_circuit_opens_for_a_dead_server(tmp_path: Path, hostile_fhir: HostileFhir) -> None:
    app = make_app(tmp_path, CIRCUIT_FAILURES=3, CIRCUIT_COOLDOWN_SECONDS=60.0)
    base = hostile_fhir.base("status/502")
    path = "/status/502/"
    timed_post(app, request_against(base))  # many parallel failures open the circuit
    before = len([h for h in hostile_fhir.hits if h.startswith(path)])
    status, payload, elapsed = timed_post(app, request_against(base))
    after = len([h for h in hostile_fhir.hits if h.startswith(path)])
    assert status == 200 and covered(payload) == "indeterminate"
    assert after == before, "no call reached the dead server while the circuit was open"
    assert "keeps failing" in json.dumps(payload)


def test_an_unreachable_server_is_quick_too(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    status, payload, elapsed = timed_post(app, request_against("http://127.0.0.1:9/fhir"))
    assert status == 200 and covered(payload) == "indeterminate" and elapsed < 2.0


def test_a_server_dripping_bytes_cannot_hold_a_read_past_the_deadline(hostile_fhir: HostileFhir) -> None:
    """One byte every 0.1 s never trips a per-read timeout; the wall-clock deadline does (issue 11.2)."""
    import requests

    from cds_server.pipeline.fhir_client import FhirClient, FhirError

    client = FhirClient(requests.Session(), hostile_fhir.base("drip/100"), None, 2.0, 5, 100, time.monotonic() + 1.0)
    started = time.monotonic()
    with pytest.raises(FhirError):
        client.read("QuestionnaireResponse/qr-1")  # a read in the request thread (supportingInfo)
    with pytest.raises(FhirError):
        client.search("Condition?patient=p")
    assert time.monotonic() - started < 2.0


def test_a_dripping_server_keeps_the_whole_call_in_its_budget(tmp_path: Path, hostile_fhir: HostileFhir) -> None:
    app = make_app(tmp_path, CALL_BUDGET_SECONDS=1.0)
    status, payload, took = timed_post(app, request_against(hostile_fhir.base("drip/100")))
    assert status == 200 and covered(payload) == "indeterminate", "the history could not be read"
    assert took < 2.5, took
    # and the pool is not left with stuck threads: a later call to a healthy server is quick
    status, payload, took = timed_post(app, request_against(hostile_fhir.base("slow/10")))
    assert status == 200 and took < 2.0, took


def test_an_answer_larger_than_the_cap_is_refused(tmp_path: Path, hostile_fhir: HostileFhir) -> None:
    import requests

    from cds_server.pipeline.fhir_client import FhirClient, FhirError

    client = FhirClient(requests.Session(), hostile_fhir.base("big/200000"), None, 2.0, 5, 100, max_bytes=100_000)
    with pytest.raises(FhirError, match="larger than"):
        client.read("QuestionnaireResponse/x")
    roomy = FhirClient(requests.Session(), hostile_fhir.base("big/2000"), None, 2.0, 5, 100, max_bytes=100_000)
    assert roomy.read("QuestionnaireResponse/x") is not None
