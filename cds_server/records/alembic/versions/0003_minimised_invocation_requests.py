"""invocation requests minimised: prefetch kept as references and digests

Invocation records keep references and digests, not the patient's chart: rows stored
before this release are rewritten with ``audit.audit_copy``, in batches.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds_server.records.alembic.versions import JSON
from cds_server.records.audit import audit_copy

revision = "0003"
down_revision = "0002"

BATCH = 500


def upgrade() -> None:
    conn = op.get_bind()
    table = sa.table("invocations", sa.column("id", sa.Integer), sa.column("request", JSON))
    last = 0
    while True:
        rows = conn.execute(
            sa.select(table.c.id, table.c.request).where(table.c.id > last).order_by(table.c.id).limit(BATCH)
        ).all()
        if not rows:
            return
        for row_id, request in rows:
            if isinstance(request, dict):
                conn.execute(table.update().where(table.c.id == row_id).values(request=audit_copy(request)))
        last = rows[-1][0]
