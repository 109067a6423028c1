"""Durable records on SQLite and PostgreSQL: assertions kept once, authorization numbers never reused."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from cds_server.records.store import Store, assertions, feedback, new_authorization_number


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store(database_url)
    yield opened
    opened.close()


def row(assertion_id: str) -> dict:
    return {
        "assertion_id": assertion_id,
        "order_ref": "ServiceRequest/1",
        "coverage_ref": "Coverage/c",
        "patient_id": "p",
        "carepath_id": "neck-pain",
        "carepath_version": "3.0.0",
        "service_id": "mri",
        "outcome": "criteria-met",
        "pa_id": None,
        "decision": {"a": [1, 2]},
        "created_at": datetime(2024, 3, 20, tzinfo=UTC),
    }


def test_an_assertion_is_stored_once_and_read_back(store: Store) -> None:
    store.save_assertion(row("ca-1"))
    store.save_assertion(row("ca-1"))
    assert store.count("assertions") == 1
    assert store.assertion("ca-1")["decision"] == {"a": [1, 2]}
    assert store.assertion("nope") is None


def test_one_assertion_gets_one_number_even_under_concurrency(store: Store) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        numbers = list(pool.map(lambda _: store.authorization_for("ca-x", date(2024, 9, 1))[0], range(16)))
    assert len(set(numbers)) == 1
    assert store.count("authorizations") == 1


def test_numbers_are_unique_across_assertions(store: Store) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        numbers = list(pool.map(lambda i: store.authorization_for(f"ca-{i}", date(2024, 9, 1))[0], range(60)))
    assert len(set(numbers)) == 60
    assert all(n.startswith("PA-") and len(n) == 13 for n in numbers)


def test_a_colliding_number_is_retried_never_reused(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = store.authorization_for("ca-a", date(2024, 9, 1))
    candidates = iter([first, first, "PA-NEWNUMBER2"])
    monkeypatch.setattr("cds_server.records.store.new_authorization_number", lambda: next(candidates))
    assert store.authorization_for("ca-b", date(2024, 9, 1)) == ("PA-NEWNUMBER2", date(2024, 9, 1))
    assert store.authorization_for("ca-a", date(2030, 1, 1)) == (first, date(2024, 9, 1)), "the first expiry stands"


def test_feedback_and_invocations_are_kept(store: Store) -> None:
    item = {"card": "u1", "outcome": "overridden", "outcomeTimestamp": "2024-03-20T10:00:00Z"}
    later = {**item, "outcomeTimestamp": "2024-03-20T10:05:00Z"}
    assert store.record_feedback("crd-order-sign", [item, item]) == 1, "a resent item is kept once"
    assert store.record_feedback("crd-order-sign", [item, later]) == 1, "a new outcome time is a new item"
    store.record_invocation(
        {
            "hook_instance": "h",
            "service_id": "crd-order-sign",
            "hook": "order-sign",
            "patient_id": "p",
            "received_at": datetime(2024, 3, 20, tzinfo=UTC),
            "status": 200,
            "duration_ms": 1.0,
            "request": {"x": 1},
            "response": {"cards": []},
        }
    )
    assert store.count("feedback") == 2 and store.count("invocations") == 1
    assert store.ping()


def test_postgres_uses_jsonb(store: Store) -> None:
    if store.engine.dialect.name != "postgresql":
        return
    with store.engine.connect() as conn:
        kind = conn.execute(
            sa.text(
                "select data_type from information_schema.columns "
                "where table_name='assertions' and column_name='decision'"
            )
        ).scalar()
    assert kind == "jsonb"
    assert assertions.c.decision is not None


def test_numbers_look_random() -> None:
    numbers = {new_authorization_number() for _ in range(1000)}
    assert len(numbers) == 1000


def test_one_instant_is_one_feedback_item_however_it_is_spelled(store: Store) -> None:
    item = {"card": "u1", "outcome": "overridden", "outcomeTimestamp": "2024-03-20T10:00:00Z"}
    spellings = ["2024-03-20T10:00:00Z", "2024-03-20T10:00:00.000Z", "2024-03-20T10:00:00.000000000Z"]
    assert store.record_feedback("crd-order-sign", [{**item, "outcomeTimestamp": t} for t in spellings]) == 1
    nanos = [
        {**item, "outcomeTimestamp": t} for t in ("2024-03-20T10:00:00.123456789Z", "2024-03-20T10:00:00.12345679Z")
    ]
    assert store.record_feedback("crd-order-sign", nanos) == 2, "instants a nanosecond apart stay two items"
    assert (
        store.record_feedback("crd-order-sign", [{**item, "outcomeTimestamp": "2024-03-20T10:00:00.123456790Z"}]) == 0
    )
    with store.engine.connect() as conn:
        kept = {r.outcome_timestamp: r.payload for r in conn.execute(sa.select(feedback).order_by(feedback.c.id))}
    assert list(kept) == ["2024-03-20T10:00:00Z", "2024-03-20T10:00:00.123456789Z", "2024-03-20T10:00:00.12345679Z"]
    assert kept["2024-03-20T10:00:00.123456789Z"] == nanos[0], "the item itself is kept as received"
    with pytest.raises(ValueError, match="not a UTC instant"):
        store.record_feedback("crd-order-sign", [{**item, "outcomeTimestamp": "2024-03-20T10:00:00." + "0" * 40 + "Z"}])
    assert store.count("feedback") == 3


@pytest.mark.parametrize(
    "when",
    ["2024-01-01T00:00:00." + "1234567890" * 4 + "Z", "2024-01-01T00:00:00.1234567890Z", "2024-01-01T00:00:00.Z"],
    ids=["40-digit-fraction", "10-digit-fraction", "empty-fraction"],
)
def test_an_outcome_time_too_precise_to_keep_is_a_400_not_a_500(database_url: str, when: str) -> None:
    from cds_server.web.app import create_app

    app = create_app({"AUTH_REQUIRED": False, "DATABASE_URL": database_url})
    try:
        client = app.test_client()
        url = "/cds-services/crd-order-sign/feedback"
        item = {"card": "u1", "outcome": "overridden", "outcomeTimestamp": when}
        refused = client.post(url, json={"feedback": [item]})
        assert refused.status_code == 400, refused.get_data(as_text=True)
        body = refused.get_json()
        assert body["resourceType"] == "OperationOutcome"
        assert any("outcomeTimestamp" in str(i.get("expression")) for i in body["issue"]), body
        nine = client.post(url, json={"feedback": [{**item, "outcomeTimestamp": "2024-01-01T00:00:00.123456789Z"}]})
        assert nine.status_code == 200 and nine.get_json() == {"received": 1, "new": 1, "unknownCards": ["u1"]}
        assert app.extensions["cds"].store.count("feedback") == 1
    finally:
        app.extensions["cds"].store.close()
