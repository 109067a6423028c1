"""Schema migrations (Alembic) on SQLite and PostgreSQL: in order, once, data kept, never run backwards.

Every guarantee of ``cds_server.records.migrations`` has a test here: the declared schema,
databases from older releases adopted with their data (made by Alembic, by the home-made
runner that came before it, or before migrations existed), a newer database refused with
nothing written, one migrator at a time, and Alembic's own command doing the same.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cds_server.records import migrations
from cds_server.records.audit import digest
from cds_server.records.store import Store, metadata

ROOT = Path(__file__).resolve().parent.parent
REVISIONS = [r.id for r in migrations.history()]
BOOKKEEPING = {"alembic_version", migrations.LEGACY_TABLE}


def _revision(module: str) -> Any:
    """A revision module (its frozen tables build the databases older releases left)."""
    return importlib.import_module(f"cds_server.records.alembic.versions.{module}")


def _schema(engine: sa.Engine) -> dict[str, Any]:
    """Tables with their columns (name, nullable) and every unique column set."""
    inspector = sa.inspect(engine)
    out: dict[str, Any] = {}
    for table in inspector.get_table_names():
        if table in BOOKKEEPING:
            continue
        columns = {(c["name"], bool(c["nullable"])) for c in inspector.get_columns(table)}
        unique = {frozenset(i["column_names"]) for i in inspector.get_indexes(table) if i["unique"]}
        unique |= {frozenset(u["column_names"]) for u in inspector.get_unique_constraints(table)}
        out[table] = (columns, unique)
    return out


def _declared() -> dict[str, Any]:
    declared = sa.create_engine("sqlite://")
    metadata.create_all(declared)
    return _schema(declared)


def _at(engine: sa.Engine, version: int, origin: str) -> None:
    """Leave the database as a release at ``version`` did: through Alembic, or the home-made runner.

    The home-made runner's version N is revision 000N step for step (checked once against that
    runner itself on both databases); it recorded its steps in ``schema_migrations`` and had no
    ``alembic_version``.
    """
    migrations.migrate(engine, f"{version:04d}")
    if origin == "alembic":
        return
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
        conn.execute(
            sa.text(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR(200) NOT NULL,"
                " applied_at TIMESTAMP WITH TIME ZONE NOT NULL)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO schema_migrations VALUES (:v, :d, :t)"),
            [{"v": v, "d": f"step {v}", "t": datetime.now(UTC)} for v in range(1, version + 1)],
        )


ORIGINS = pytest.mark.parametrize("origin", ["alembic", "home-made"])


def test_a_new_database_gets_exactly_the_schema_the_code_declares(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        assert migrations.migrate(engine) == REVISIONS
        assert _schema(engine) == _declared(), "migrations and store.metadata have drifted apart"
        assert migrations.current(engine) == [migrations.head()] == [REVISIONS[-1]]
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


def _feedback(conn: sa.Connection, rows: list[tuple[str, str, str, int]]) -> None:
    """Feedback rows as an older release stored them: (service, card, outcome time, n), n kept in the payload."""
    conn.execute(
        sa.text(
            "INSERT INTO feedback (service_id, card, outcome, outcome_timestamp, payload, received_at) "
            "VALUES (:s, :c, 'overridden', :ts, :p, :t)"
        ),
        [
            {"s": s, "c": c, "ts": ts, "p": _json({"n": n}), "t": datetime(2024, 3, 20 + n, tzinfo=UTC)}
            for s, c, ts, n in rows
        ],
    )


def _v1_rows(conn: sa.Connection, *, twice: bool = True) -> None:
    """An invocation with its whole prefetch, an authorization, and feedback (received twice unless told)."""
    once = [("crd-order-sign", "u1", "2024-03-20T10:00:00Z", 1)]
    _feedback(conn, [*once, ("crd-order-sign", "u1", "2024-03-20T10:00:00Z", 2)] if twice else once)
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


@ORIGINS
def test_a_version_1_database_is_upgraded_with_its_data(database_url: str, origin: str) -> None:
    """Data migrations still happen for old databases: feedback kept once, requests minimised (0003)."""
    engine = sa.create_engine(database_url)
    try:
        _at(engine, 1, origin)
        with engine.begin() as conn:
            _v1_rows(conn)
        store = Store(database_url)  # what a restart with the new release does
        assert migrations.current(engine) == [migrations.head()]
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
        assert _schema(engine) == _declared()
        store.close()
    finally:
        engine.dispose()


def test_a_database_made_before_migrations_is_adopted(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        _revision("0001_first_release").tables().create_all(engine)  # what create_all() left in earlier builds
        store = Store(database_url)
        assert migrations.current(engine) == [migrations.head()]
        assert _schema(engine) == _declared()
        assert store.ping()
        store.close()
    finally:
        engine.dispose()


def test_the_home_made_runners_latest_database_is_stamped_not_migrated_again(database_url: str) -> None:
    """Version 9 is revision 0009: only what came after runs, and rows a rerun would change stay as they are."""
    engine = sa.create_engine(database_url)
    try:
        _at(engine, migrations.LEGACY_LATEST, "home-made")
        assert migrations.current(engine) == [f"legacy:{migrations.LEGACY_LATEST}"]
        with engine.begin() as conn:  # a request 0003 would minimise, and a spelling 0007 would rewrite
            _v1_rows(conn, twice=False)
            _feedback(conn, [("crd-order-sign", "u2", "2024-03-20T10:00:00.000Z", 2)])
        assert migrations.migrate(engine) == REVISIONS[migrations.LEGACY_LATEST :], "only the revisions after 0009"
        assert migrations.current(engine) == [migrations.head()]
        assert _schema(engine) == _declared()
        assert {r[3] for r in _feedback_rows(engine)} == {"2024-03-20T10:00:00Z", "2024-03-20T10:00:00.000Z"}
        with engine.connect() as conn:
            (request,) = conn.execute(sa.text("SELECT request FROM invocations")).scalars().all()
            history = conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY version")).scalars().all()
        assert "sensitive note" in (request if isinstance(request, str) else _json(request)), "rows left as they were"
        assert history == [*range(1, migrations.LEGACY_LATEST + 1), 1000], "its history kept, and the marker"
    finally:
        engine.dispose()


def test_a_release_from_before_alembic_would_refuse_the_database() -> None:
    """Revision 0010 leaves version 1000 in schema_migrations: above 9, so the home-made runner refused it."""
    assert _revision("0010_legacy_marker").MARKER > migrations.LEGACY_LATEST


def _refused_without_writing(database_url: str, expected: str) -> None:
    """The service does not start, and the database is exactly as it was."""
    from cds_server.web.app import create_app  # here: the spawned migrators import this module

    engine = sa.create_engine(database_url)
    try:
        before = _schema(engine), _bookkeeping(engine), _feedback_rows(engine)
        with pytest.raises(migrations.SchemaTooNew, match=expected):
            create_app({"DATABASE_URL": database_url, "AUTH_REQUIRED": False, "LOG_LEVEL": "ERROR"})
        assert (_schema(engine), _bookkeeping(engine), _feedback_rows(engine)) == before, "nothing touched"
    finally:
        engine.dispose()


def _bookkeeping(engine: sa.Engine) -> dict[str, list[Any]]:
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        return {t: sorted(map(tuple, conn.execute(sa.text(f"SELECT * FROM {t}")))) for t in BOOKKEEPING & set(tables)}


def test_a_database_from_a_newer_release_is_refused(database_url: str) -> None:
    Store(database_url).close()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        _v1_rows(conn, twice=False)
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_future'"))
    engine.dispose()
    _refused_without_writing(database_url, "revision 0099_future, this release knows up to 0010")


def test_a_home_made_database_from_a_newer_release_is_refused(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        _at(engine, migrations.LEGACY_LATEST, "home-made")
        with engine.begin() as conn:
            _v1_rows(conn, twice=False)
            conn.execute(sa.text("INSERT INTO schema_migrations VALUES (99, 'future', :t)"), {"t": datetime.now(UTC)})
    finally:
        engine.dispose()
    _refused_without_writing(database_url, "schema version 99 with no Alembic revision")


def test_a_migration_that_fails_half_way_leaves_the_database_as_it_was(database_url: str) -> None:
    """All revisions of a start run in one transaction, DDL included (SQLite's driver would commit each ALTER)."""
    engine = sa.create_engine(database_url)
    try:
        _at(engine, 3, "alembic")
        with engine.begin() as conn:  # makes 0004's second ALTER fail, after its first has run
            conn.execute(sa.text("ALTER TABLE assertions ADD COLUMN decided_ms FLOAT"))
        before = _schema(engine)
        with pytest.raises(sa.exc.SQLAlchemyError):
            migrations.migrate(engine)
        assert _schema(engine) == before, "0004's first column is not left behind"
        assert migrations.current(engine) == ["0003"]
    finally:
        engine.dispose()


def test_stores_opened_together_in_one_process_migrate_once(database_url: str) -> None:
    """Threads of one process take turns: Alembic's running command lives in module globals."""

    def start(_: int) -> list[str]:
        engine = sa.create_engine(database_url)
        try:
            return migrations.migrate(engine)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(3) as pool:
        applied = list(pool.map(start, range(3)))
    assert sorted(r for a in applied for r in a) == REVISIONS, "each revision applied by exactly one thread"
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [REVISIONS[-1]]
    engine.dispose()


def _migrator(url: str, name: str, hold: float, second_starting: Any, results: Any) -> None:
    """A migrating process (spawned). With ``hold``, it stops after its first revision, inside its
    transaction and lock, until the second migrator is about to start, then ``hold`` seconds more."""
    if hold:
        recorder = migrations._recorder

        def held(applied: list[str]) -> Any:
            record = recorder(applied)

            def pause(**kw: Any) -> None:
                record(**kw)
                if applied == REVISIONS[:1]:
                    results.put((name, "inside"))
                    second_starting.wait(60)
                    time.sleep(hold)

            return pause

        migrations._recorder = held
    else:
        second_starting.set()
    engine = sa.create_engine(url)
    try:
        results.put((name, migrations.migrate(engine)))
    except Exception as exc:
        results.put((name, f"{type(exc).__name__}: {exc}"))
    finally:
        engine.dispose()


def test_a_second_migrator_waits_for_the_first_to_finish(database_url: str) -> None:
    """Two processes migrate one database at once: the second waits for the first, then finds nothing to do.

    The first is held inside its transaction after its first revision while the second starts.
    On SQLite the hold outlasts the 5-second busy timeout, so it is the lock file that makes the
    second wait, not only ``BEGIN IMMEDIATE``; on PostgreSQL the advisory lock.
    """
    hold = 6.0 if database_url.startswith("sqlite") else 1.0
    ctx = multiprocessing.get_context("spawn")
    second_starting, results = ctx.Event(), ctx.Queue()
    first = ctx.Process(target=_migrator, args=(database_url, "first", hold, second_starting, results))
    second = ctx.Process(target=_migrator, args=(database_url, "second", 0.0, second_starting, results))
    first.start()
    try:
        assert results.get(timeout=120) == ("first", "inside")
        second.start()
        finished = [results.get(timeout=120), results.get(timeout=120)]
    finally:
        for process in (first, second):
            process.join(60)
            if process.is_alive():
                process.kill()
    assert finished == [("first", REVISIONS), ("second", [])], "the second waited, then found the work done"


def test_alembics_own_command_migrates_the_same_way(database_url: str) -> None:
    """``alembic -c cds_server/records/alembic/alembic.ini upgrade head``, as docs/configuration.md says."""
    engine = sa.create_engine(database_url)
    try:
        _at(engine, 1, "home-made")
        command = [sys.executable, "-m", "alembic", "-c", "cds_server/records/alembic/alembic.ini"]
        done = subprocess.run(
            [*command, "-x", f"url={database_url}", "upgrade", "head"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "Running upgrade 0009 -> 0010" in done.stderr
        assert migrations.current(engine) == [migrations.head()]
        assert _schema(engine) == _declared()
    finally:
        engine.dispose()


# --- databases made before migrations, exactly as the release before them left them --------------------------


def _pre_migration_tables() -> sa.MetaData:
    """The tables ``create_all`` made before migrations existed (frozen from ``d64ab3f^``: store.py, auth.py).

    The first release's tables and cards_issued, but feedback declares ``feedback_once`` inside
    CREATE TABLE: on SQLite that is an automatic index no DROP INDEX removes.
    """
    md = _revision("0001_first_release").tables()
    md.tables["feedback"].append_constraint(
        sa.UniqueConstraint("card", "outcome", "outcome_timestamp", name="feedback_once")
    )
    _revision("0002_cards_issued_feedback_once").cards_issued(md)
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
@ORIGINS
def test_a_pre_migration_database_loses_the_old_feedback_unique(
    database_url: str, first_upgrade: int | None, origin: str
) -> None:
    """Feedback kept under one service must not block the same item under another, however the table was made."""
    engine = sa.create_engine(database_url)
    try:
        _pre_migration_tables().create_all(engine)
        assert ONCE_ANY_SERVICE in _unique_column_sets(engine, "feedback"), "the old shape, as released"
        with engine.begin() as conn:
            _feedback(
                conn,
                [
                    ("crd-order-sign", "u1", "2024-03-20T10:00:00Z", 1),
                    ("crd-order-select", "u2", "2024-03-20T10:00:00Z", 2),
                ],
            )
        if first_upgrade:  # a build with migrations up to 5 already started on it
            _at(engine, first_upgrade, origin)
        store = Store(database_url)
        assert migrations.current(engine) == [migrations.head()]
        unique = _unique_column_sets(engine, "feedback")
        assert ONCE_ANY_SERVICE not in unique and ONCE_PER_SERVICE in unique
        assert _schema(engine) == _declared(), "an adopted database ends with the declared schema"
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


@ORIGINS
def test_feedback_times_stored_before_version_7_get_one_spelling(database_url: str, origin: str) -> None:
    """``…00Z`` and ``…00.000Z`` are one item: the earliest stands, the rest get the canonical spelling."""
    engine = sa.create_engine(database_url)
    try:
        _at(engine, 6, origin)
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
            _feedback(conn, rows)
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
