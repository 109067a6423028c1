"""service_secrets: secrets shared by every worker (decision-link signing)

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    md = sa.MetaData()
    sa.Table(
        "service_secrets",
        md,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
    )
    md.create_all(op.get_bind(), checkfirst=True)
