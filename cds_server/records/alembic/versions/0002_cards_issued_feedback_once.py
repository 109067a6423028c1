"""cards_issued; feedback kept once (unique card, outcome, time)

Feedback received twice before this release is kept once: the earliest row stands.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds_server.records.alembic.versions import JSON

revision = "0002"
down_revision = "0001"


def cards_issued(md: sa.MetaData) -> sa.Table:
    """The cards_issued table as first made (frozen; databases from before migrations had it too)."""
    return sa.Table(
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


def upgrade() -> None:
    conn = op.get_bind()
    md = sa.MetaData()
    cards_issued(md)
    md.create_all(conn, checkfirst=True)
    conn.execute(
        sa.text(
            "DELETE FROM feedback WHERE id NOT IN ("
            " SELECT MIN(id) FROM feedback GROUP BY card, outcome, outcome_timestamp)"
        )
    )
    conn.execute(
        sa.text("CREATE UNIQUE INDEX IF NOT EXISTS feedback_once ON feedback (card, outcome, outcome_timestamp)")
    )
