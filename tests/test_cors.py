"""CORS for browser clients such as the CDS Hooks sandbox (checklist 156-158)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_server.web.app import create_app

SANDBOX = "https://sandbox.cds-hooks.org"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "order-sign-mri.json"
PATHS = ["/cds-services", "/cds-services/crd-order-sign", "/cds-services/crd-order-sign/feedback"]


def make(tmp_path: Path, origins: list[str], auth: bool = True) -> FlaskClient:
    app: Flask = create_app(
        {
            "AUTH_REQUIRED": auth,
            "TRUSTED_CLIENTS": [],
            "DATABASE_URL": f"sqlite:///{tmp_path / 'c.sqlite'}",
            "CORS_ORIGINS": origins,
        }
    )
    return app.test_client()


def preflight(client: FlaskClient, path: str, origin: str = SANDBOX) -> object:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


@pytest.mark.parametrize("path", PATHS)
def test_preflight_is_answered_without_a_token_even_when_auth_is_on(tmp_path: Path, path: str) -> None:
    response = preflight(make(tmp_path, [SANDBOX]), path)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Vary"] == "Origin"
    assert response.headers["X-Request-ID"], "every answer carries its request id"


def test_an_origin_not_listed_gets_no_cors_headers(tmp_path: Path) -> None:
    client = make(tmp_path, [SANDBOX])
    response = preflight(client, "/cds-services", "https://evil.example")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert client.get("/cds-services", headers={"Origin": "https://evil.example"}).status_code == 401


def test_no_origins_configured_means_no_cors(tmp_path: Path) -> None:
    response = preflight(make(tmp_path, []), "/cds-services")
    assert "Access-Control-Allow-Origin" not in response.headers


def test_the_answer_itself_carries_the_headers_so_the_browser_can_read_it(tmp_path: Path) -> None:
    client = make(tmp_path, [SANDBOX], auth=False)
    discovery = client.get("/cds-services", headers={"Origin": SANDBOX})
    assert discovery.status_code == 200 and discovery.headers["Access-Control-Allow-Origin"] == SANDBOX
    signed = client.post(
        "/cds-services/crd-order-sign", json=json.loads(EXAMPLE.read_text()), headers={"Origin": SANDBOX}
    )
    assert signed.status_code == 200 and signed.headers["Access-Control-Allow-Origin"] == SANDBOX
    error = client.post(
        "/cds-services/crd-order-sign", data="{", content_type="application/json", headers={"Origin": SANDBOX}
    )
    assert error.status_code == 400 and error.headers["Access-Control-Allow-Origin"] == SANDBOX, (
        "errors are readable too"
    )


def test_a_401_is_readable_by_the_browser(tmp_path: Path) -> None:
    response = make(tmp_path, [SANDBOX]).get("/cds-services", headers={"Origin": SANDBOX})
    assert response.status_code == 401 and response.headers["Access-Control-Allow-Origin"] == SANDBOX


def test_wildcard_allows_any_origin_without_vary(tmp_path: Path) -> None:
    response = preflight(make(tmp_path, ["*"]), "/cds-services", "https://anything.example")
    assert response.headers["Access-Control-Allow-Origin"] == "*" and "Vary" not in response.headers


def test_pages_outside_the_api_get_no_cors(tmp_path: Path) -> None:
    response = preflight(make(tmp_path, [SANDBOX]), "/metrics")
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("setting", ["http://127.0.0.1:8383", "http://127.0.0.1:8383, https://other.example"])
def test_origins_given_as_a_string_are_exact_origins(tmp_path: Path, setting: str) -> None:
    """A plain string is a list of origins, not text to search in (issue 11.11)."""
    client = make(tmp_path, setting)  # type: ignore[arg-type]
    assert preflight(client, "/cds-services", "http://127.0.0.1:8383").status_code == 204
    for near in ["http://127.0.0.1:83", "h", "http://127.0.0.1", "127.0.0.1:8383", ":"]:
        response = preflight(client, "/cds-services", near)
        assert "Access-Control-Allow-Origin" not in response.headers, near
