"""first release: invocations, assertions, authorizations, feedback, jti_seen

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds_server.records.alembic.versions import JSON

revision = "0001"
down_revision = None


def tables() -> sa.MetaData:
    """The first release's tables, frozen (tests make a database from before migrations with them)."""
    md = sa.MetaData()
    _decisions(md)
    _feedback_and_tokens(md)
    return md


def _decisions(md: sa.MetaData) -> None:
    """What a call decided: the invocation, its coverage assertions, the authorization numbers issued."""
    sa.Table(
        "invocations",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hook_instance", sa.String(200), nullable=False, index=True),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("hook", sa.String(50)),
        sa.Column("patient_id", sa.String(200)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.Float),
        sa.Column("request", JSON),
        sa.Column("response", JSON),
    )
    sa.Table(
        "assertions",
        md,
        sa.Column("assertion_id", sa.String(80), primary_key=True),
        sa.Column("order_ref", sa.String(200), nullable=False),
        sa.Column("coverage_ref", sa.String(300), nullable=False),
        sa.Column("patient_id", sa.String(200)),
        sa.Column("carepath_id", sa.String(100)),
        sa.Column("carepath_version", sa.String(30)),
        sa.Column("service_id", sa.String(100)),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("pa_id", sa.String(40)),
        sa.Column("decision", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "authorizations",
        md,
        sa.Column("pa_id", sa.String(40), primary_key=True),
        sa.Column("assertion_id", sa.String(80), nullable=False, unique=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_on", sa.Date, nullable=False),
    )


def _feedback_and_tokens(md: sa.MetaData) -> None:
    """What clients sent back about cards, and the JWT ids already used."""
    sa.Table(
        "feedback",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("card", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("outcome_timestamp", sa.String(40), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "jti_seen",
        md,
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )


def upgrade() -> None:
    tables().create_all(op.get_bind(), checkfirst=True)
