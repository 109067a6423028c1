"""feedback: a table-level unique (card, outcome, time) from before migrations removed

Databases made before migrations declared ``feedback_once`` inside CREATE TABLE. SQLite keeps
such a constraint as an automatic index no DROP INDEX can remove (0005's ``DROP INDEX IF
EXISTS feedback_once`` left it), so feedback kept under one service still blocked the same
item under another: the table is rebuilt without it. PostgreSQL drops the constraint by name.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from cds_server.records.alembic.versions import JSON

revision = "0006"
down_revision = "0005"

ONCE_ANY_SERVICE = frozenset({"card", "outcome", "outcome_timestamp"})
COLUMNS = "id, service_id, card, outcome, outcome_timestamp, payload, received_at, card_issued"


def feedback_table(md: sa.MetaData, name: str) -> sa.Table:
    """The feedback table as of 0005 (frozen), under ``name``."""
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


def upgrade() -> None:
    conn = op.get_bind()
    inspector = sa.inspect(conn)
    stale = [
        u["name"]
        for u in inspector.get_unique_constraints("feedback")
        if frozenset(u["column_names"]) == ONCE_ANY_SERVICE
    ]
    stale_indexes = [
        i["name"]
        for i in inspector.get_indexes("feedback")
        if i["unique"] and frozenset(i["column_names"]) == ONCE_ANY_SERVICE and not i.get("duplicates_constraint")
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
    _rebuild_sqlite(conn)


def _rebuild_sqlite(conn: Connection) -> None:
    """Copy feedback into a table without the constraint, then put it in the old one's place."""
    conn.execute(sa.text("DROP TABLE IF EXISTS feedback_new"))  # left by an attempt that stopped half-way
    feedback_table(sa.MetaData(), "feedback_new").create(conn)
    conn.execute(sa.text(f"INSERT INTO feedback_new ({COLUMNS}) SELECT {COLUMNS} FROM feedback"))
    conn.execute(sa.text("DROP TABLE feedback"))
    conn.execute(sa.text("ALTER TABLE feedback_new RENAME TO feedback"))
    conn.execute(
        sa.text(
            "CREATE UNIQUE INDEX feedback_once_per_service ON feedback (service_id, card, outcome, outcome_timestamp)"
        )
    )
