"""Schema migrations on SQLite and PostgreSQL: in order, once, data kept, never run backwards."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from cds_server.records import migrations
from cds_server.records.audit import digest
from cds_server.records.store import Store, metadata


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


# --- databases made before migrations, exactly as the release before them left them --------------------------


def _pre_migration_tables() -> sa.MetaData:
    """The tables ``create_all`` made before migrations existed (frozen from ``d64ab3f^``: store.py, auth.py).

    Unlike ``migrations._v1_tables``, feedback declares ``feedback_once`` inside CREATE TABLE: on
    SQLite that is an automatic index no DROP INDEX removes.
    """
    json_type = sa.JSON().with_variant(JSONB(), "postgresql")
    md = sa.MetaData()
    sa.Table(
        "invocations",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hook_instance", sa.String(200), nullable=False, index=True),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("hook", sa.String(50)),
        sa.Column("patient_id", sa.String(200)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.Float),
        sa.Column("request", json_type),
        sa.Column("response", json_type),
    )
    sa.Table(
        "assertions",
        md,
        sa.Column("assertion_id", sa.String(80), primary_key=True),
        sa.Column("order_ref", sa.String(200), nullable=False),
        sa.Column("coverage_ref", sa.String(300), nullable=False),
        sa.Column("patient_id", sa.String(200)),
        sa.Column("carepath_id", sa.String(100)),
        sa.Column("carepath_version", sa.String(30)),
        sa.Column("service_id", sa.String(100)),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("pa_id", sa.String(40)),
        sa.Column("decision", json_type, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "authorizations",
        md,
        sa.Column("pa_id", sa.String(40), primary_key=True),
        sa.Column("assertion_id", sa.String(80), nullable=False, unique=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_on", sa.Date, nullable=False),
    )
    sa.Table(
        "feedback",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("card", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("outcome_timestamp", sa.String(40), nullable=False),
        sa.Column("payload", json_type, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("card", "outcome", "outcome_timestamp", name="feedback_once"),
    )
    sa.Table(
        "cards_issued",
        md,
        sa.Column("uuid", sa.String(64), primary_key=True),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("hook_instance", sa.String(200)),
        sa.Column("order_ref", sa.String(200)),
        sa.Column("topic", sa.String(60)),
        sa.Column("suggestions", json_type),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "jti_seen",
        md,
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )
    return md


def _unique_column_sets(engine: sa.Engine, table: str) -> set[frozenset[str]]:
    """Every unique column set on ``table``, SQLite's automatic indexes included."""
    inspector = sa.inspect(engine)
    extra = {"include_auto_indexes": True} if engine.dialect.name == "sqlite" else {}
    unique = {frozenset(i["column_names"]) for i in inspector.get_indexes(table, **extra) if i["unique"]}
    return unique | {frozenset(u["column_names"]) for u in inspector.get_unique_constraints(table)}


def _feedback_rows(engine: sa.Engine) -> set[tuple[str, str, str, str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT service_id, card, outcome, outcome_timestamp, payload FROM feedback"))
        return {(*r[:4], (r[4] if isinstance(r[4], dict) else json.loads(r[4]))["n"]) for r in rows}


ONCE_ANY_SERVICE = frozenset({"card", "outcome", "outcome_timestamp"})
ONCE_PER_SERVICE = frozenset({"service_id", "card", "outcome", "outcome_timestamp"})


@pytest.mark.parametrize("first_upgrade", [None, 5], ids=["straight-to-latest", "via-version-5"])
def test_a_pre_migration_database_loses_the_old_feedback_unique(database_url: str, first_upgrade: int | None) -> None:
    """Feedback kept under one service must not block the same item under another, however the table was made."""
    engine = sa.create_engine(database_url)
    try:
        _pre_migration_tables().create_all(engine)
        assert ONCE_ANY_SERVICE in _unique_column_sets(engine, "feedback"), "the old shape, as released"
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO feedback (service_id, card, outcome, outcome_timestamp, payload, received_at) "
                    "VALUES (:s, :c, 'overridden', '2024-03-20T10:00:00Z', :p, :t)"
                ),
                [
                    {"s": "crd-order-sign", "c": "u1", "p": '{"n": 1}', "t": datetime(2024, 3, 20, tzinfo=UTC)},
                    {"s": "crd-order-select", "c": "u2", "p": '{"n": 2}', "t": datetime(2024, 3, 21, tzinfo=UTC)},
                ],
            )
        if first_upgrade:  # a build with migrations up to 5 already started on it
            assert migrations.migrate(engine, target=first_upgrade)[-1] == first_upgrade
        store = Store(database_url)
        assert migrations.current_version(engine) == migrations.LATEST
        unique = _unique_column_sets(engine, "feedback")
        assert ONCE_ANY_SERVICE not in unique and ONCE_PER_SERVICE in unique
        declared = sa.create_engine("sqlite://")
        metadata.create_all(declared)
        assert _schema(engine) == _schema(declared), "an adopted database ends with the declared schema"
        assert _feedback_rows(engine) == {
            ("crd-order-sign", "u1", "overridden", "2024-03-20T10:00:00Z", 1),
            ("crd-order-select", "u2", "overridden", "2024-03-20T10:00:00Z", 2),
        }, "rows kept"
        item = {"card": "u1", "outcome": "overridden", "outcomeTimestamp": "2024-03-20T10:00:00Z"}
        assert store.record_feedback("crd-order-select", [item]) == 1, "the same item under another service is kept"
        assert store.record_feedback("crd-order-sign", [item]) == 0, "and still once per service"
        assert store.record_feedback("crd-order-sign", [{**item, "card": "u3"}]) == 1, "ids go on after the copy"
        assert store.count("feedback") == 4
        store.close()
    finally:
        engine.dispose()


def test_feedback_times_stored_before_version_7_get_one_spelling(database_url: str) -> None:
    """``…00Z`` and ``…00.000Z`` are one item: the earliest stands, the rest get the canonical spelling."""
    engine = sa.create_engine(database_url)
    try:
        migrations.migrate(engine, target=6)
        rows = [
            ("crd-order-sign", "u1", "2024-03-20T10:00:00.000Z", 1),
            ("crd-order-sign", "u1", "2024-03-20T10:00:00Z", 2),  # the same item again: dropped
            ("crd-order-sign", "u2", "2024-03-20T10:05:00.120Z", 3),
            ("crd-order-sign", "u3", "2024-03-20T10:06:00Z", 4),
            ("crd-order-sign", "u3", "2024-03-20T10:06:00.0Z", 5),  # later than its canonical twin: dropped
            ("crd-order-select", "u2", "2024-03-20T10:05:00.12Z", 6),  # another service: kept
            ("crd-order-sign", "u4", "not.a-time", 7),  # never a valid time: left as it was
        ]
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO feedback (service_id, card, outcome, outcome_timestamp, payload, received_at) "
                    "VALUES (:s, :c, 'overridden', :ts, :p, :t)"
                ),
                [{"s": s, "c": c, "ts": ts, "p": _json({"n": n}), "t": datetime.now(UTC)} for s, c, ts, n in rows],
            )
        store = Store(database_url)
        assert _feedback_rows(engine) == {
            ("crd-order-sign", "u1", "overridden", "2024-03-20T10:00:00Z", 1),
            ("crd-order-sign", "u2", "overridden", "2024-03-20T10:05:00.12Z", 3),
            ("crd-order-sign", "u3", "overridden", "2024-03-20T10:06:00Z", 4),
            ("crd-order-select", "u2", "overridden", "2024-03-20T10:05:00.12Z", 6),
            ("crd-order-sign", "u4", "overridden", "not.a-time", 7),
        }
        again = {"card": "u2", "outcome": "overridden", "outcomeTimestamp": "2024-03-20T10:05:00.120000Z"}
        assert store.record_feedback("crd-order-sign", [again]) == 0, "a resent item is recognised after the upgrade"
        store.close()
    finally:
        engine.dispose()
