"""assertions: client_iss and client_tenant (decision pages are the asking client's)

Revision ID: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.execute(sa.text("ALTER TABLE assertions ADD COLUMN client_iss VARCHAR(300)"))
    op.execute(sa.text("ALTER TABLE assertions ADD COLUMN client_tenant VARCHAR(200)"))
