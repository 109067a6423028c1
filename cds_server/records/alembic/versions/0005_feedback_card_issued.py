"""feedback.card_issued (unknown cards kept, flagged); kept once per service

Once per service: a misrouted item kept under one service must not block the right one.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    conn = op.get_bind()
    conn.execute(sa.text("ALTER TABLE feedback ADD COLUMN card_issued BOOLEAN"))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ALTER TABLE feedback DROP CONSTRAINT IF EXISTS feedback_once"))
    conn.execute(sa.text("DROP INDEX IF EXISTS feedback_once"))
    conn.execute(
        sa.text(
            "CREATE UNIQUE INDEX feedback_once_per_service ON feedback (service_id, card, outcome, outcome_timestamp)"
        )
    )
