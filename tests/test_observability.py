"""Logs a machine can read and that leak nothing; metrics Prometheus can scrape; health and readiness."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_server.scenarios import SCENARIO_DIR, hook_request, load_scenario
from cds_server.web.app import create_app
from cds_server.web.observability import JsonFormatter

NOW = datetime(2024, 3, 20, 15, 0, tzinfo=UTC)


def test_json_log_lines_carry_the_request_id_and_no_patient_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        {"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'o.sqlite'}", "CLOCK": lambda: NOW}
    )
    body = hook_request(load_scenario(SCENARIO_DIR / "mri/met-failed-conservative-care.json"))
    body["fhirAuthorization"] = {
        "access_token": "SECRET-TOKEN",
        "token_type": "Bearer",
        "expires_in": 30,
        "scope": "s",
        "subject": "c",
    }
    body["fhirServer"] = "http://127.0.0.1:9/fhir"
    with caplog.at_level(logging.INFO):
        response = app.test_client().post("/cds-services/crd-order-sign", json=body, headers={"X-Request-ID": "req-42"})
    assert response.headers["X-Request-ID"] == "req-42"
    lines = [JsonFormatter().format(r) for r in caplog.records]
    parsed = [json.loads(line) for line in lines]
    request_line = next(p for p in parsed if p["message"] == "request")
    assert request_line["request_id"] == "req-42" and request_line["status"] == 200
    text = "\n".join(lines)
    for secret in ("SECRET-TOKEN", "M54.2", "1970-05-01", "p-mri-1"):
        assert secret not in text


def test_metrics_count_calls_latency_and_outcomes(tmp_path: Path) -> None:
    app = create_app(
        {"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.sqlite'}", "CLOCK": lambda: NOW}
    )
    client = app.test_client()
    client.post(
        "/cds-services/crd-order-sign",
        json=hook_request(load_scenario(SCENARIO_DIR / "mri/met-failed-conservative-care.json")),
    )
    client.post("/cds-services/crd-order-sign", json={})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'cds_hook_calls_total{service="crd-order-sign",status="200"}' in text
    assert 'cds_hook_calls_total{service="crd-order-sign",status="400"}' in text
    assert 'cds_hook_latency_seconds_bucket{hook="order-sign"' in text
    assert 'cds_decisions_total{outcome="criteria-met",service="mri"}' in text
    assert "cds_fhir_fetch_seconds" in text


def test_health_and_readiness(tmp_path: Path) -> None:
    app = create_app({"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'h.sqlite'}"})
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready == {"status": "ready", "checks": {"database": True, "carepaths": True}}


def test_readiness_fails_when_the_database_is_gone(tmp_path: Path) -> None:
    import sqlalchemy as sa

    app = create_app({"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'r.sqlite'}"})
    app.extensions["cds"].store.engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and response.get_json()["checks"]["database"] is False


def test_a_dead_redis_fails_closed_with_503(tmp_path: Path) -> None:
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}",
            "REDIS_URL": "redis://127.0.0.1:9/0",
            "TRUSTED_CLIENTS": [{"iss": "x", "jwks": {"keys": []}}],
            "PUBLIC_BASE_URL": "https://cds.payer.example",  # required with trusted clients (issue 11.7)
        }
    )
    authenticator = app.extensions["cds-auth"]
    authenticator.check = lambda *a: authenticator.jtis.first_use("x", "j", 9e9)  # type: ignore[method-assign]
    response = app.test_client().get("/cds-services", headers={"Authorization": "Bearer x"})
    assert response.status_code == 503 and response.get_json()["resourceType"] == "OperationOutcome"
