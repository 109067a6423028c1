"""Versioned schema migrations: a database is brought to the code's schema at start, in order, once.

Why not ``create_all``: a table that exists is never changed by it, so a
deployed database would silently keep yesterday's shape (a missing unique index
is a lost guarantee, not an error). Each migration here is a numbered step with
a description; ``schema_migrations`` records which steps a database has had.
Steps use SQL that SQLite and PostgreSQL both accept where they can (a SQLite
table rebuild is the exception), and are written against frozen table definitions,
never against ``store.metadata`` (which moves on with the code).
``tests/test_migrations.py`` checks that a database migrated from version 1, or
made before migrations existed, ends with exactly the tables and indexes
``store.metadata`` declares.

Workers starting together take turns: PostgreSQL through an advisory lock,
a SQLite file through an exclusive file lock beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_PG_LOCK = 4826319
_BATCH = 500


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer release than this one: refuse to run against it."""


@dataclass(frozen=True)
class Migration:
    """One numbered step."""

    version: int
    description: str
    apply: Callable[[Connection], None]


versions = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


# --- version 1: the first release's tables (frozen) ------------------------------------------


def _v1_tables() -> sa.MetaData:
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
        sa.Column("request", JSON),
        sa.Column("response", JSON),
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
        sa.Column("decision", JSON, nullable=False),
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
        sa.Column("payload", JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "jti_seen",
        md,
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )
    return md


def _v1(conn: Connection) -> None:
    _v1_tables().create_all(conn, checkfirst=True)


# --- version 2: feedback tied to the cards issued, and kept once ---------------------------------


def _v2(conn: Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "cards_issued",
        md,
        sa.Column("uuid", sa.String(64), primary_key=True),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("hook_instance", sa.String(200)),
        sa.Column("order_ref", sa.String(200)),
        sa.Column("topic", sa.String(60)),
        sa.Column("suggestions", JSON),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    )
    md.create_all(conn, checkfirst=True)
    # Feedback received twice before this release is kept once: the earliest row stands.
    conn.execute(
        sa.text(
            "DELETE FROM feedback WHERE id NOT IN ("
            " SELECT MIN(id) FROM feedback GROUP BY card, outcome, outcome_timestamp)"
        )
    )
    conn.execute(
        sa.text("CREATE UNIQUE INDEX IF NOT EXISTS feedback_once ON feedback (card, outcome, outcome_timestamp)")
    )


# --- version 3: invocation records keep references and digests, not the patient's chart ---------------


def _v3(conn: Connection) -> None:
    from cds_server.records.audit import audit_copy

    table = sa.table("invocations", sa.column("id", sa.Integer), sa.column("request", JSON))
    last = 0
    while True:
        rows = conn.execute(
            sa.select(table.c.id, table.c.request).where(table.c.id > last).order_by(table.c.id).limit(_BATCH)
        ).all()
        if not rows:
            return
        for row_id, request in rows:
            if isinstance(request, dict):
                conn.execute(table.update().where(table.c.id == row_id).values(request=audit_copy(request)))
        last = rows[-1][0]


# --- version 4: each determination names its invocation and keeps its latency ---------------------------


def _v4(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE assertions ADD COLUMN hook_instance VARCHAR(200)"))
    conn.execute(sa.text("ALTER TABLE assertions ADD COLUMN decided_ms FLOAT"))


# --- version 5: feedback about cards this service did not issue is kept, flagged -------------------------


def _v5(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE feedback ADD COLUMN card_issued BOOLEAN"))
    # Once per service: a misrouted item kept under one service must not block the right one.
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ALTER TABLE feedback DROP CONSTRAINT IF EXISTS feedback_once"))
    conn.execute(sa.text("DROP INDEX IF EXISTS feedback_once"))
    conn.execute(
        sa.text(
            "CREATE UNIQUE INDEX feedback_once_per_service ON feedback (service_id, card, outcome, outcome_timestamp)"
        )
    )


# --- version 6: the first release's table-level unique (card, outcome, time) removed everywhere ----------

_ONCE_ANY_SERVICE = frozenset({"card", "outcome", "outcome_timestamp"})
_FEEDBACK_COLUMNS = "id, service_id, card, outcome, outcome_timestamp, payload, received_at, card_issued"


def _feedback_v6(md: sa.MetaData, name: str) -> sa.Table:
    """The feedback table as of version 5 (frozen), under ``name``."""
    return sa.Table(
        name,
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("card", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("outcome_timestamp", sa.String(40), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("card_issued", sa.Boolean),
    )


def _v6(conn: Connection) -> None:
    """Databases made before migrations declared ``feedback_once`` inside CREATE TABLE.

    SQLite keeps such a constraint as an automatic index no DROP INDEX can remove (version 5's
    ``DROP INDEX IF EXISTS feedback_once`` left it), so feedback kept under one service still
    blocked the same item under another: the table is rebuilt without it. PostgreSQL drops the
    constraint by name (version 5 already did when it was called ``feedback_once``).
    """
    inspector = sa.inspect(conn)
    stale = [
        u["name"]
        for u in inspector.get_unique_constraints("feedback")
        if frozenset(u["column_names"]) == _ONCE_ANY_SERVICE
    ]
    stale_indexes = [
        i["name"]
        for i in inspector.get_indexes("feedback")
        if i["unique"] and frozenset(i["column_names"]) == _ONCE_ANY_SERVICE and not i.get("duplicates_constraint")
    ]
    quote = conn.dialect.identifier_preparer.quote
    for name in stale_indexes:
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {quote(name)}"))
    if not stale:
        return
    if conn.dialect.name != "sqlite":
        for name in stale:
            conn.execute(sa.text(f"ALTER TABLE feedback DROP CONSTRAINT IF EXISTS {quote(name)}"))
        return
    conn.execute(sa.text("DROP TABLE IF EXISTS feedback_new"))  # left by an attempt that stopped half-way
    _feedback_v6(sa.MetaData(), "feedback_new").create(conn)
    conn.execute(sa.text(f"INSERT INTO feedback_new ({_FEEDBACK_COLUMNS}) SELECT {_FEEDBACK_COLUMNS} FROM feedback"))
    conn.execute(sa.text("DROP TABLE feedback"))
    conn.execute(sa.text("ALTER TABLE feedback_new RENAME TO feedback"))
    conn.execute(
        sa.text(
            "CREATE UNIQUE INDEX feedback_once_per_service ON feedback (service_id, card, outcome, outcome_timestamp)"
        )
    )


# --- version 7: feedback outcome times kept in one spelling per instant ------------------------------------


def _v7(conn: Connection) -> None:
    """``…00Z`` and ``…00.000Z`` are one instant: rows get ``feedback.canonical_instant``'s spelling.

    Only a time with a fraction can be spelled another way. When two rows become the same item
    the earliest stands, as in version 2. A value that is not an instant is left as it is.
    """
    from fhir_mappings.dates import canonical_instant

    table = _feedback_v6(sa.MetaData(), "feedback")
    c = table.c
    last = 0
    while True:
        rows = conn.execute(
            sa.select(c.id, c.service_id, c.card, c.outcome, c.outcome_timestamp)
            .where(c.id > last, c.outcome_timestamp.like("%.%"))
            .order_by(c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        for row_id, service_id, card, outcome, spelled in rows:
            try:
                canonical = canonical_instant(spelled)
            except ValueError:
                continue
            if canonical == spelled:
                continue
            same = c.service_id == service_id, c.card == card, c.outcome == outcome, c.outcome_timestamp == canonical
            other = conn.execute(sa.select(c.id).where(*same)).scalar()
            if other is not None and other < row_id:
                conn.execute(table.delete().where(c.id == row_id))
                continue
            if other is not None:
                conn.execute(table.delete().where(c.id == other))
            conn.execute(table.update().where(c.id == row_id).values(outcome_timestamp=canonical))
        last = rows[-1][0]


# --- version 8: secrets shared by every worker and instance (decision-link signing) ----------------------


def _v8(conn: Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "service_secrets",
        md,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
    )
    md.create_all(conn, checkfirst=True)


# --- version 9: who asked for each determination (decision pages are the asking client's) ----------------


def _v9(conn: Connection) -> None:
    conn.execute(sa.text("ALTER TABLE assertions ADD COLUMN client_iss VARCHAR(300)"))
    conn.execute(sa.text("ALTER TABLE assertions ADD COLUMN client_tenant VARCHAR(200)"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "first release: invocations, assertions, authorizations, feedback, jti_seen", _v1),
    Migration(2, "cards_issued; feedback kept once (unique card, outcome, time)", _v2),
    Migration(3, "invocation requests minimised: prefetch kept as references and digests", _v3),
    Migration(4, "assertions: hook_instance and decided_ms (the determination's latency)", _v4),
    Migration(5, "feedback.card_issued (unknown cards kept, flagged); kept once per service", _v5),
    Migration(6, "feedback: a table-level unique (card, outcome, time) from before migrations removed", _v6),
    Migration(7, "feedback: outcome times kept in one spelling per instant (.000Z is Z)", _v7),
    Migration(8, "service_secrets: secrets shared by every worker (decision-link signing)", _v8),
    Migration(9, "assertions: client_iss and client_tenant (decision pages are the asking client's)", _v9),
)
LATEST = MIGRATIONS[-1].version


def migrate(engine: Engine, target: int = LATEST) -> list[int]:
    """Bring the database to ``target``; return the versions applied now (empty when up to date).

    :raises SchemaTooNew: the database has a version this code does not know.
    """
    with _exclusive(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        current = _current_version(conn)
        if current > LATEST:
            raise SchemaTooNew(
                f"the database is at schema version {current}, this release knows up to {LATEST}: "
                "run a release at least as new as the one that migrated it"
            )
        applied = []
        for step in MIGRATIONS:
            if current < step.version <= target:
                step.apply(conn)
                conn.execute(
                    versions.insert().values(
                        version=step.version, description=step.description, applied_at=datetime.now(UTC)
                    )
                )
                applied.append(step.version)
    if applied:
        log.info("database schema migrated to version %s (applied %s)", applied[-1], applied)
    return applied


def current_version(engine: Engine) -> int:
    """Return the database's schema version (0 for an empty database)."""
    with engine.connect() as conn:
        return _current_version(conn)


def _current_version(conn: Connection) -> int:
    """Read the recorded version; a database made before migrations existed counts as version 1."""
    inspector = sa.inspect(conn)
    if not inspector.has_table("schema_migrations"):
        versions.create(conn)
        if inspector.has_table("invocations"):
            conn.execute(
                versions.insert().values(
                    version=1, description="adopted: tables existed before migrations", applied_at=datetime.now(UTC)
                )
            )
            return 1
        return 0
    return int(conn.execute(sa.select(sa.func.max(versions.c.version))).scalar() or 0)


@contextlib.contextmanager
def _exclusive(engine: Engine) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite file while migrating (other databases lock themselves)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate-lock")
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
