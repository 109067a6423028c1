"""Issue 11: what an adversarial test found (PHI in errors, hostile URLs, huge calls, hostile FHIR servers)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from cds_server.records.store import invocations
from cds_server.web.app import create_app

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "order-sign-mri.json"
SIGN = "/cds-services/crd-order-sign"
SSN = "123-45-6789"
NAME = "Johnathan Q. Subscriber"


def make_app(tmp_path: Path, **extra: Any) -> Flask:
    return create_app({"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'h.sqlite'}", **extra})


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    app.extensions["cds"].store.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def example() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return body


def post(client: FlaskClient, body: Any) -> tuple[int, Any]:
    response = client.post(SIGN, data=json.dumps(body), content_type="application/json")
    assert response.mimetype == "application/json", response.data[:200]
    return response.status_code, response.get_json()


def stored_responses(app: Flask) -> list[Any]:
    with app.extensions["cds"].store.engine.connect() as conn:
        return [row[0] for row in conn.execute(sa.select(invocations.c.response))]


# --- 11.5: no value from the request in an error ------------------------------------------


@pytest.mark.parametrize(
    "misplaced",
    [
        {"subscriber": f"{NAME} {SSN}"},  # a string where a Reference goes
        {"subscriberId": {"name": NAME, "ssn": SSN}},  # an object where a string goes
        {"period": {"start": f"{NAME} {SSN}"}},  # not a dateTime
        {f"{NAME} {SSN}": True},  # the value used as a member name
        {"class": [{"type": f"{NAME} {SSN}", "value": "x"}]},
    ],
)
def test_a_coverage_error_names_the_element_never_the_value(
    app: Flask, client: FlaskClient, misplaced: dict[str, Any]
) -> None:
    body = example()
    coverage = body["prefetch"]["coverage"]["entry"][0]["resource"]
    coverage.update(copy.deepcopy(misplaced))
    status, payload = post(client, body)
    assert status == 400 and payload["resourceType"] == "OperationOutcome"
    text = json.dumps(payload)
    assert SSN not in text and "Johnathan" not in text and "input_value" not in text, text
    stored = json.dumps(stored_responses(app))
    assert SSN not in stored and "Johnathan" not in stored


# --- 11.4: fhirServer must be an absolute http(s) URL, checked up front ---------------------

BAD_SERVERS = [
    "http://[::1",
    "http://[::1]]/fhir",
    "http://[::1]:99999/fhir",
    "http://host:port/fhir",
    "http://a..b/fhir",
    "http://" + "a" * 70 + ".example/fhir",
    "http://:80/fhir",
    "https://user:secret@ehr.example/fhir",
    "http://ehr.example/fhir#x",
    "http://\u2603\u2603/fhir",
    "http://exa mple/fhir",
]


@pytest.mark.parametrize("server", BAD_SERVERS)
def test_a_malformed_fhir_server_is_400_not_500(client: FlaskClient, server: str) -> None:
    body = example()
    body["fhirServer"] = server
    del body["prefetch"]["coverage"]  # so the service would have to call it
    status, payload = post(client, body)
    assert status == 400, payload
    assert payload["issue"][0]["expression"] == ["$.fhirServer"]
    assert "secret" not in json.dumps(payload)


# --- 11.3: orders per call, and no number without its decision -------------------------------


def with_orders(count: int) -> dict[str, Any]:
    body = example()
    entry = body["context"]["draftOrders"]["entry"][0]
    body["context"]["draftOrders"]["entry"] = [
        {**copy.deepcopy(entry), "fullUrl": f"urn:uuid:sr-{i}", "resource": {**entry["resource"], "id": f"sr-{i}"}}
        for i in range(count)
    ]
    return body


def test_ten_thousand_orders_are_refused_at_once_naming_the_limit(client: FlaskClient) -> None:
    import time

    started = time.monotonic()
    status, payload = post(client, with_orders(10_000))
    assert status == 413 and payload["resourceType"] == "OperationOutcome"
    assert "MAX_ORDERS_PER_CALL" in json.dumps(payload)
    assert time.monotonic() - started < 5


def test_the_limit_is_a_setting(tmp_path: Path) -> None:
    client = make_app(tmp_path, MAX_ORDERS_PER_CALL=2).test_client()
    assert post(client, with_orders(2))[0] == 200
    assert post(client, with_orders(3))[0] == 413


def test_a_worker_killed_while_recording_leaves_no_number_without_its_decision(app: Flask, client: FlaskClient) -> None:
    """Numbers and decisions are kept in one transaction (gunicorn's timeout raises SystemExit in the worker)."""
    store = app.extensions["cds"].store

    def killed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ASSERTIONS"):
            raise SystemExit(1)

    sa.event.listen(store.engine, "before_cursor_execute", killed)
    try:
        with pytest.raises(SystemExit):
            client.post(SIGN, data=json.dumps(with_orders(3)), content_type="application/json")
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", killed)
    assert store.count("authorizations") == store.count("assertions") == 0
    status, payload = post(client, with_orders(3))
    assert status == 200 and store.count("authorizations") == 3 == store.count("assertions"), "each number kept"
