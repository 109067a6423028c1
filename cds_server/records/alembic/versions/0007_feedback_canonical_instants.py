"""feedback: outcome times kept in one spelling per instant (.000Z is Z)

``…00Z`` and ``…00.000Z`` are one instant: rows get ``canonical_instant``'s spelling. Only a
time with a fraction can be spelled another way. When two rows become the same item the
earliest stands, as in 0002. A value that is not an instant is left as it is.

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhir_mappings.dates import canonical_instant

revision = "0007"
down_revision = "0006"

BATCH = 500


def _feedback() -> sa.TableClause:
    return sa.table(
        "feedback",
        sa.column("id", sa.Integer),
        sa.column("service_id", sa.String),
        sa.column("card", sa.String),
        sa.column("outcome", sa.String),
        sa.column("outcome_timestamp", sa.String),
    )


def upgrade() -> None:
    conn = op.get_bind()
    table = _feedback()
    c = table.c
    last = 0
    while True:
        rows = conn.execute(
            sa.select(c.id, c.service_id, c.card, c.outcome, c.outcome_timestamp)
            .where(c.id > last, c.outcome_timestamp.like("%.%"))
            .order_by(c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        for row_id, service_id, card, outcome, spelled in rows:
            try:
                canonical = canonical_instant(spelled)
            except ValueError:
                continue
            if canonical == spelled:
                continue
            same = c.service_id == service_id, c.card == card, c.outcome == outcome, c.outcome_timestamp == canonical
            other = conn.execute(sa.select(c.id).where(*same)).scalar()
            if other is not None and other < row_id:
                conn.execute(table.delete().where(c.id == row_id))
                continue
            if other is not None:
                conn.execute(table.delete().where(c.id == other))
            conn.execute(table.update().where(c.id == row_id).values(outcome_timestamp=canonical))
        last = rows[-1][0]
