"""``db``: the records database's schema: bring it up to date, say where it is, list the migrations.

The service migrates at start anyway (``Store``); ``db upgrade`` lets an operator do it
before a deployment, with the same lock, checks and adoption of older databases. The
database is ``--url``, else ``CDS_DATABASE_URL``, else the service's default, exactly as
``serve`` would open it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cds_server.tools.common import CommandError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

DB_HELP = (
    "The records database's schema migrations (Alembic revisions shipped in cds_server/records/alembic). "
    "The database is --url, else $CDS_DATABASE_URL, else the service's default."
)


def register(commands: Any) -> None:
    """Add ``db upgrade``, ``db current`` and ``db history`` to the command line."""
    db = commands.add_parser(
        "db", help="migrate the records database, or show its schema revision", description=DB_HELP
    )
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="bring the database to the newest revision (as a start does)")
    upgrade.set_defaults(run=cmd_upgrade)
    current = actions.add_parser("current", help="show the database's revision, changing nothing")
    current.set_defaults(run=cmd_current)
    history = actions.add_parser("history", help="list the revisions this release knows, oldest first")
    history.set_defaults(run=cmd_history)
    for action in (upgrade, current):
        action.add_argument("--url", help="SQLAlchemy URL of the database (default: $CDS_DATABASE_URL)")


def database_url(given: str | None) -> str:
    """The URL the service would open: ``--url``, else ``CDS_DATABASE_URL``, else the default setting."""
    from cds_server.config import DEFAULTS

    return given or os.environ.get("CDS_DATABASE_URL") or str(DEFAULTS["DATABASE_URL"])


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise CommandError(f"not a usable database URL: {exc}", code=2) from exc
    try:
        yield engine
    except sa.exc.OperationalError as exc:
        reason = " ".join(str(exc.orig).split())  # drivers write several lines; the error is one
        raise CommandError(f"cannot reach the database: {reason}") from exc
    finally:
        engine.dispose()


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Migrate; a database newer than this release is an error (1) and is left untouched."""
    from cds_server.records import migrations

    with _engine(database_url(args.url)) as engine:
        try:
            applied = migrations.migrate(engine)
        except migrations.SchemaTooNew as exc:
            raise CommandError(str(exc)) from exc
    head = migrations.head()
    print(f"database at revision {head}" + (f" (applied {', '.join(applied)})" if applied else ", already up to date"))
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    """Print each revision the database records and how it stands against this release."""
    from cds_server.records import migrations

    with _engine(database_url(args.url)) as engine:
        revisions = migrations.current(engine)
    head = migrations.head()
    known = {r.id for r in migrations.history()}
    if not revisions:
        print(f"none: an empty database (db upgrade brings it to {head})")
    for revision in revisions:
        if revision == head:
            print(f"{revision} (the newest this release knows)")
        elif revision in known or revision.startswith("legacy:"):
            print(f"{revision} (this release knows up to {head}: db upgrade brings it there)")
        else:
            print(f"{revision} (newer than this release, which knows up to {head}: it will refuse to start)")
    return 0


def cmd_history(_args: argparse.Namespace) -> int:
    """Print the revisions, oldest first, with what each one does."""
    from cds_server.records import migrations

    for revision in migrations.history():
        print(f"{revision.id}  {revision.description}")
    return 0
