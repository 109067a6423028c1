"""Schema migrations on SQLite and PostgreSQL: in order, once, data kept, never run backwards."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from cds_server import migrations
from cds_server.audit import digest
from cds_server.store import Store, metadata


def _schema(engine: sa.Engine) -> dict[str, Any]:
    """Tables with their columns (name, nullable) and every unique column set."""
    inspector = sa.inspect(engine)
    out: dict[str, Any] = {}
    for table in inspector.get_table_names():
        if table == "schema_migrations":
            continue
        columns = {(c["name"], bool(c["nullable"])) for c in inspector.get_columns(table)}
        unique = {frozenset(i["column_names"]) for i in inspector.get_indexes(table) if i["unique"]}
        unique |= {frozenset(u["column_names"]) for u in inspector.get_unique_constraints(table)}
        out[table] = (columns, unique)
    return out


def test_a_new_database_gets_exactly_the_schema_the_code_declares(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        assert migrations.migrate(engine) == [m.version for m in migrations.MIGRATIONS]
        declared = sa.create_engine("sqlite://")
        metadata.create_all(declared)
        assert _schema(engine) == _schema(declared), "migrations and store.metadata have drifted apart"
        assert migrations.current_version(engine) == migrations.LATEST
        assert migrations.migrate(engine) == [], "a second start changes nothing"
    finally:
        engine.dispose()


PREFETCH_CONDITIONS = {
    "resourceType": "Bundle",
    "type": "searchset",
    "entry": [
        {
            "resource": {
                "resourceType": "Condition",
                "id": "c1",
                "meta": {"versionId": "3"},
                "code": {"text": "cervical radiculopathy, sensitive note"},
            }
        }
    ],
}


def _v1_rows(conn: sa.Connection) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO feedback (service_id, card, outcome, outcome_timestamp, payload, received_at) "
            "VALUES ('crd-order-sign', 'u1', 'overridden', '2024-03-20T10:00:00Z', :p, :t)"
        ),
        [{"p": '{"n": 1}', "t": datetime(2024, 3, 20, tzinfo=UTC)}, {"p": '{"n": 2}', "t": datetime.now(UTC)}],
    )
    conn.execute(
        sa.text(
            "INSERT INTO invocations (hook_instance, service_id, hook, patient_id, received_at, status, request) "
            "VALUES ('h1', 'crd-order-sign', 'order-sign', 'p1', :t, 200, :r)"
        ),
        {
            "t": datetime(2024, 3, 20, tzinfo=UTC),
            "r": _json({"hook": "order-sign", "prefetch": {"c": PREFETCH_CONDITIONS}}),
        },
    )
    conn.execute(
        sa.text(
            "INSERT INTO authorizations (pa_id, assertion_id, issued_at, expires_on) VALUES ('PA-1', 'ca-1', :t, :d)"
        ),
        {"t": datetime(2024, 3, 20, tzinfo=UTC), "d": date(2024, 9, 16)},
    )


def _json(value: Any) -> str:
    return json.dumps(value)


def test_a_version_1_database_is_upgraded_with_its_data(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        assert migrations.migrate(engine, target=1) == [1]
        with engine.begin() as conn:
            _v1_rows(conn)
        store = Store(database_url)  # what a restart with the new release does
        assert migrations.current_version(engine) == migrations.LATEST
        assert store.count("feedback") == 1, "feedback received twice is kept once, the earliest"
        assert (
            store.record_feedback(
                "crd-order-sign", [{"card": "u1", "outcome": "overridden", "outcomeTimestamp": "2024-03-20T10:00:00Z"}]
            )
            == 0
        ), "and the unique index now holds"
        assert store.authorization_for("ca-1", date(2030, 1, 1)) == ("PA-1", date(2024, 9, 16)), "numbers survive"
        with engine.connect() as conn:
            (request,) = conn.execute(sa.text("SELECT request FROM invocations")).scalars().all()
        request = request if isinstance(request, dict) else json.loads(request)
        kept = request["prefetch"]["c"]
        assert kept["refs"] == ["Condition/c1/_history/3"] and kept["sha256"] == digest(PREFETCH_CONDITIONS)
        assert "sensitive note" not in _json(request), "the chart itself is no longer kept"
        store.close()
    finally:
        engine.dispose()


def test_a_database_made_before_migrations_is_adopted(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        migrations._v1_tables().create_all(engine)  # what create_all() left behind in earlier builds
        store = Store(database_url)
        assert migrations.current_version(engine) == migrations.LATEST
        assert store.ping()
        store.close()
    finally:
        engine.dispose()


def test_a_database_from_a_newer_release_is_refused(database_url: str) -> None:
    Store(database_url).close()
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                migrations.versions.insert().values(version=99, description="future", applied_at=datetime.now(UTC))
            )
        with pytest.raises(migrations.SchemaTooNew, match="version 99"):
            Store(database_url)
    finally:
        engine.dispose()


def test_workers_starting_together_migrate_once(database_url: str) -> None:
    def start(_: int) -> list[int]:
        engine = sa.create_engine(database_url)
        try:
            return migrations.migrate(engine)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(4) as pool:
        applied = list(pool.map(start, range(4)))
    assert sorted(v for a in applied for v in a) == [m.version for m in migrations.MIGRATIONS]
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM schema_migrations")).scalar() == len(migrations.MIGRATIONS)
    engine.dispose()
