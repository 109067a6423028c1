"""assertions: hook_instance and decided_ms (the determination's latency)

Each determination names the invocation that first made it and keeps how long the engine took.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute(sa.text("ALTER TABLE assertions ADD COLUMN hook_instance VARCHAR(200)"))
    op.execute(sa.text("ALTER TABLE assertions ADD COLUMN decided_ms FLOAT"))
