"""Schema migrations with Alembic: a database is brought to the code's schema at start, in order, once.

Why not ``create_all``: a table that exists is never changed by it, so a deployed
database would silently keep yesterday's shape (a missing unique index is a lost
guarantee, not an error). The steps are Alembic revisions in ``records/alembic/versions``
(shipped with the code); ``alembic_version`` records where a database is. This module
adds what plain Alembic does not give, for ``Store`` at start, ``python -m cds_server db``
and Alembic's own command alike (``records/alembic/env.py`` calls :func:`run_env`):

- **one migrator at a time**: within a process through a lock (Alembic keeps a running
  command's context in module globals, ``alembic.context`` and ``alembic.op``, so two
  threads migrating at once would use each other's); across processes and instances,
  PostgreSQL through a transaction-level advisory lock,
  a SQLite file through an exclusive lock on a file beside it (waited for however long
  the first one takes) and one ``BEGIN IMMEDIATE`` transaction, so a crash half-way
  leaves the database as it was;
- **a database newer than the code is refused** (:class:`SchemaTooNew`) before anything
  is written, rather than written with an older idea of its shape;
- **older databases are adopted**: one made by the home-made runner that came before
  Alembic (``schema_migrations``, versions 1 to 9) is stamped with the revision of the
  same number, and one made before migrations existed (tables, no version) as revision
  0001; the revisions after that run on them as on any database, data migrations included.

Every step runs inside one transaction with the checks, so a refused start touches nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from cds_server.config import DEFAULTS

log = logging.getLogger(__name__)
SCRIPTS = Path(__file__).with_name("alembic")
LEGACY_TABLE = "schema_migrations"  # the home-made runner's record of the versions applied
LEGACY_LATEST = 9  # its last version; revision "0009" is the same step
_PG_LOCK = 4826319  # the key the home-made runner used too, so both kinds of release take turns
_IN_PROCESS = threading.Lock()  # Alembic's commands run on module-global proxies: one at a time per process


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer release than this one: refuse to run against it."""


@dataclass(frozen=True)
class Revision:
    """One migration step as ``db history`` lists it."""

    id: str
    description: str


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic's configuration for the shipped scripts; ``engine`` is the database to migrate.

    Without an engine (Alembic's own command line) :func:`run_env` reads the URL from
    ``-x url=…``, else ``CDS_DATABASE_URL``, else the default setting.
    """
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["engine"] = engine
    config.attributes["applied"] = []
    return config


def migrate(engine: Engine, target: str = "head") -> list[str]:
    """Bring the database to ``target``; return the revisions applied now (empty when up to date).

    :raises SchemaTooNew: the database has a revision (or home-made version) this code does not know.
    """
    config = alembic_config(engine)
    with _IN_PROCESS:
        command.upgrade(config, target)
    applied: list[str] = config.attributes["applied"]
    if applied:
        log.info("database schema migrated to revision %s (applied %s)", applied[-1], applied)
    return applied


def current(engine: Engine) -> list[str]:
    """The database's revisions as it records them, without adopting or changing anything.

    A database from before Alembic reads as ``legacy:<version>`` (``legacy:1`` when it
    was made before migrations); an empty one as no revision at all.
    """
    with engine.connect() as conn:
        heads = list(MigrationContext.configure(conn).get_current_heads())
        if heads:
            return heads
        legacy = _legacy_version(conn)
    return [] if legacy is None else [f"legacy:{legacy}"]


def head() -> str:
    """The newest revision this code knows."""
    return str(_scripts().get_current_head())


def history() -> list[Revision]:
    """Every revision, oldest first, with the first line of its description."""
    scripts = list(_scripts().walk_revisions())
    return [Revision(s.revision, (s.doc or "").strip().splitlines()[0]) for s in reversed(scripts)]


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


# --- what env.py runs, under every command -------------------------------------------------------


def run_env(context: EnvironmentContext) -> None:
    """Run the command Alembic was given, holding the lock, after the checks and adoption.

    :raises SchemaTooNew: the database is newer than the code (nothing is written).
    """
    if context.is_offline_mode():
        raise CommandError("offline (--sql) migrations are not supported: revisions 0003 and 0007 read rows")
    engine, owned = _engine_for(context)
    try:
        with _exclusive(engine), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            _refuse_newer(conn, context.script)
            _adopt(conn, context.script)
            applied: list[str] = context.config.attributes.setdefault("applied", [])
            context.configure(connection=conn, on_version_apply=_recorder(applied))
            with context.begin_transaction():
                context.run_migrations()
    finally:
        if owned:
            engine.dispose()


def database_url(context: EnvironmentContext) -> str:
    """The URL Alembic's own command migrates: ``-x url=…``, else ``CDS_DATABASE_URL``, else the default."""
    given = context.get_x_argument(as_dictionary=True).get("url")
    return given or os.environ.get("CDS_DATABASE_URL") or str(DEFAULTS["DATABASE_URL"])


def _engine_for(context: EnvironmentContext) -> tuple[Engine, bool]:
    """The engine to migrate with, and whether it is ours to dispose.

    A SQLite file gets an engine of its own whose transactions start with ``BEGIN IMMEDIATE``
    and hold DDL too (the driver's default runs CREATE and ALTER outside any transaction),
    so a migration is all or nothing there as on PostgreSQL. An in-memory SQLite database
    exists only in the caller's engine, which is used as it is.
    """
    given: Engine | None = context.config.attributes.get("engine")
    url = given.url if given is not None else sa.make_url(database_url(context))
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return (given, False) if given is not None else (sa.create_engine(url, poolclass=NullPool), True)
    engine = sa.create_engine(url, poolclass=NullPool)
    sa.event.listen(engine, "connect", _driver_autocommit)
    sa.event.listen(engine, "begin", _begin_immediate)
    return engine, True


def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN (below) is the only one


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def _exclusive(engine: Engine) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite file while migrating (PostgreSQL locks in the transaction).

    The lock file is what the home-made runner used, so an older release starting beside
    this one waits too.
    """
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


def _refuse_newer(conn: Connection, scripts: ScriptDirectory) -> None:
    """Raise SchemaTooNew when the database records a step this code does not have."""
    newest = scripts.get_current_head()
    for revision in MigrationContext.configure(conn).get_current_heads():
        try:
            known = scripts.get_revision(revision)
        except CommandError:
            known = None
        if known is None:
            raise SchemaTooNew(
                f"the database is at schema revision {revision}, this release knows up to {newest}: "
                "run a release at least as new as the one that migrated it"
            )
    legacy = _legacy_version(conn)
    if legacy is not None and legacy > LEGACY_LATEST and not sa.inspect(conn).has_table("alembic_version"):
        raise SchemaTooNew(
            f"the database is at schema version {legacy} with no Alembic revision recorded, this release knows "
            f"versions up to {LEGACY_LATEST}: run a release at least as new as the one that migrated it"
        )


def _adopt(conn: Connection, scripts: ScriptDirectory) -> None:
    """Stamp a database from before Alembic with the revision matching what it already has."""
    if sa.inspect(conn).has_table("alembic_version"):
        return
    legacy = _legacy_version(conn)
    if legacy is None:
        return  # an empty database: every revision runs
    revision = f"{legacy:04d}"
    MigrationContext.configure(conn).stamp(scripts, revision)
    log.info("database from before Alembic (version %s) adopted as revision %s", legacy, revision)


def _legacy_version(conn: Connection) -> int | None:
    """The home-made runner's version: its highest row, 1 for tables made before migrations, None when empty."""
    inspector = sa.inspect(conn)
    if inspector.has_table(LEGACY_TABLE):
        found = conn.execute(sa.text(f"SELECT MAX(version) FROM {LEGACY_TABLE}")).scalar()  # noqa: S608 - a constant
        if found is not None:
            return int(found)
    return 1 if inspector.has_table("invocations") else None


def _recorder(applied: list[str]) -> Any:
    def record(*, step: MigrationInfo, **_: Any) -> None:
        if step.is_upgrade and not step.is_stamp and step.up_revision_id:
            applied.append(step.up_revision_id)

    return record
