"""schema_migrations marker: releases from before Alembic refuse this database

Releases before Alembic read only ``schema_migrations`` and refuse a database whose highest
version there is above their own. Without this row such a release, started by mistake (a
rollback, an old container), would take an Alembic database for one made before migrations
and run its steps again over it. With it, it stops at start with "the database is at schema
version 1000". Version 1000 is beyond any home-made step (they ended at 9).

Revision ID: 0010
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"

MARKER = 1000


def upgrade() -> None:
    legacy = sa.Table(
        "schema_migrations",
        sa.MetaData(),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )
    legacy.create(op.get_bind(), checkfirst=True)
    op.get_bind().execute(
        legacy.insert().values(
            version=MARKER,
            description="schema kept by Alembic (alembic_version): run a release with Alembic migrations",
            applied_at=datetime.now(UTC),
        )
    )
