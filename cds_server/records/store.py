"""Durable records: every invocation, every coverage assertion, every authorization number.

CRD requires a payer to keep all guidance it gave (``found-11``, ``found-37``);
authorization numbers are issued once and never reused. SQLAlchemy Core keeps
one code path for the embedded SQLite default and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from cds_server.records.json_text import stored_json
from cds_server.records.migrations import migrate
from fhir_mappings.dates import canonical_instant

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
metadata = sa.MetaData()

invocations = sa.Table(
    "invocations",
    metadata,
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
assertions = sa.Table(
    "assertions",
    metadata,
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
    sa.Column("hook_instance", sa.String(200)),  # the invocation that first made this determination
    sa.Column("decided_ms", sa.Float),  # how long the engine took to decide that call's orders
    sa.Column("client_iss", sa.String(300)),  # the authenticated client that asked (None: authentication off)
    sa.Column("client_tenant", sa.String(200)),  # and its tenant, when its token named one
)
authorizations = sa.Table(
    "authorizations",
    metadata,
    sa.Column("pa_id", sa.String(40), primary_key=True),
    sa.Column("assertion_id", sa.String(80), nullable=False, unique=True),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_on", sa.Date, nullable=False),
)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("service_id", sa.String(100), nullable=False),
    sa.Column("card", sa.String(200), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("outcome_timestamp", sa.String(40), nullable=False),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("card_issued", sa.Boolean),  # False: the card is not one this service issued (kept, flagged)
    sa.Index("feedback_once_per_service", "service_id", "card", "outcome", "outcome_timestamp", unique=True),
)
cards_issued = sa.Table(
    "cards_issued",
    metadata,
    sa.Column("uuid", sa.String(64), primary_key=True),
    sa.Column("service_id", sa.String(100), nullable=False),
    sa.Column("hook_instance", sa.String(200)),
    sa.Column("order_ref", sa.String(200)),
    sa.Column("topic", sa.String(60)),
    sa.Column("suggestions", JSON),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
)
service_secrets = sa.Table(  # secrets every worker and instance must share (e.g. decision-link signing)
    "service_secrets",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)
jti_seen = sa.Table(  # JWT ids already used, until their token expires (auth.JtiStore)
    "jti_seen",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)

# The numbers of some assertions, built once (an expanding IN: one statement whatever the number of ids).
_AUTHORIZATIONS_OF = sa.select(
    authorizations.c.assertion_id, authorizations.c.pa_id, authorizations.c.expires_on
).where(authorizations.c.assertion_id.in_(sa.bindparam("ids", expanding=True)))

# The inserts of a call's unit of work, built once.
_INSERT_INVOCATION = invocations.insert()
_INSERT_AUTHORIZATION = authorizations.insert()
_INSERT_CARDS = cards_issued.insert()

# Authorization numbers: a prefix and 10 characters from an alphabet without look-alikes.
_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def new_authorization_number() -> str:
    """Return a fresh, unguessable authorization number such as ``PA-7KQ2M9XW4C``."""
    return "PA-" + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and a busy timeout let several gunicorn workers write one SQLite file (feasibility.md §7)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def now() -> datetime:
    """Return the current UTC time (the store's single clock)."""
    return datetime.now(UTC)


class Store:
    """The service's database: opened from a URL and brought to the current schema (``migrations``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._inserts_once: dict[tuple[str, str], Any] = {}
        # A pooled connection to a server is checked before use (it may have gone away); a SQLite file's cannot.
        ping = not url.startswith("sqlite")
        self.engine: Engine = sa.create_engine(url, pool_pre_ping=ping, future=True, json_serializer=stored_json)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            migrate(self.engine)
        except Exception:
            self.engine.dispose()  # a refused start leaves no connection open
            raise

    def close(self) -> None:
        """Close every pooled connection (at shutdown, and in tests)."""
        self.engine.dispose()

    def ping(self) -> bool:
        """Return True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def record_invocation(self, row: Mapping[str, Any]) -> None:
        """Keep one hook invocation and the response given (CRD found-37)."""
        with self.engine.begin() as conn:
            conn.execute(_INSERT_INVOCATION, [row])

    def save_assertion(self, row: Mapping[str, Any]) -> None:
        """Keep a coverage assertion; the same assertion id is stored once."""
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(assertions.c.assertion_id).where(assertions.c.assertion_id == row["assertion_id"])
            ).first()
            if exists is None:
                # Another worker may store the same assertion a moment earlier: that is fine.
                with contextlib.suppress(sa.exc.IntegrityError):
                    conn.execute(assertions.insert().values(**row))

    def assertion(self, assertion_id: str) -> dict[str, Any] | None:
        """Return a stored assertion by id."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(assertions).where(assertions.c.assertion_id == assertion_id)).mappings().first()
            )
        return dict(row) if row else None

    def authorization_for(self, assertion_id: str, expires_on: date) -> tuple[str, date]:
        """Return (number, expiry) of an assertion's authorization, issuing one on first use.

        The unique constraints make this safe across workers and instances: a
        number is never issued twice, and one assertion never gets two numbers.
        A repeat returns the expiry recorded when the number was issued.
        """
        for _ in range(10):
            existing = self._authorization(assertion_id)
            if existing:
                return existing
            number = new_authorization_number()
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        authorizations.insert().values(
                            pa_id=number, assertion_id=assertion_id, issued_at=now(), expires_on=expires_on
                        )
                    )
                return number, expires_on
            except sa.exc.IntegrityError:
                continue  # the number collided, or another worker issued one for this assertion
        raise RuntimeError("could not issue an authorization number")

    def authorizations_of(self, assertion_ids: list[str]) -> dict[str, tuple[str, date]]:
        """Return (number, expiry) of each of these assertions that has an authorization number, by assertion id."""
        with self.engine.connect() as conn:
            rows = conn.execute(_AUTHORIZATIONS_OF, {"ids": list(assertion_ids)})
            return {row[0]: (row[1], row[2]) for row in rows}

    def keep_call(
        self,
        invocation: Mapping[str, Any],
        assertion_rows: list[Mapping[str, Any]],
        authorization_rows: list[Mapping[str, Any]],
        card_rows: list[Mapping[str, Any]],
    ) -> bool:
        """Keep what one hook call did in one transaction, all of it or none of it; one statement per table.

        The new authorization numbers, the assertions (each kept once: one already kept stays as it was
        first stored), the invocation and the cards issued. A worker killed half-way leaves no number
        without its decision. Returns False, with nothing kept, when a unique key raced (another worker
        issued a number for the same assertion, or a number collided): the caller looks the numbers up
        again and retries.
        """
        try:
            with self.engine.begin() as conn:
                if authorization_rows:
                    conn.execute(_INSERT_AUTHORIZATION, authorization_rows)
                if assertion_rows:
                    conn.execute(self._insert_once(assertions), assertion_rows)
                conn.execute(_INSERT_INVOCATION, [invocation])
                if card_rows:
                    conn.execute(_INSERT_CARDS, card_rows)
        except sa.exc.IntegrityError:
            return False
        return True

    def _insert_once(self, table: sa.Table) -> Any:
        """An INSERT that leaves a row whose primary key is already there as it is (SQLite and PostgreSQL).

        Built once per table and kept: building it again for every call cost more than running it.
        """
        key = (self.engine.dialect.name, table.name)
        built = self._inserts_once.get(key)
        if built is None:
            insert = postgresql_insert if key[0] == "postgresql" else sqlite_insert
            built = self._inserts_once[key] = insert(table).on_conflict_do_nothing()
        return built

    def _authorization(self, assertion_id: str) -> tuple[str, date] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(authorizations.c.pa_id, authorizations.c.expires_on).where(
                    authorizations.c.assertion_id == assertion_id
                )
            ).first()
        return (row[0], row[1]) if row else None

    def shared_secret(self, name: str) -> str:
        """Return the named secret, making it once: the first worker to ask wins, the rest read it."""
        for _ in range(3):
            with self.engine.connect() as conn:
                found = conn.execute(sa.select(service_secrets.c.value).where(service_secrets.c.name == name)).scalar()
            if found:
                return str(found)
            try:
                with self.engine.begin() as conn:
                    conn.execute(service_secrets.insert().values(name=name, value=secrets.token_hex(32)))
            except sa.exc.IntegrityError:
                continue
        raise RuntimeError(f"could not read or make the secret {name!r}")

    def known_cards(self, service_id: str, uuids: list[str]) -> set[str]:
        """Return which of these card uuids this service issued."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(cards_issued.c.uuid).where(
                    cards_issued.c.uuid.in_(uuids), cards_issued.c.service_id == service_id
                )
            )
            return {row[0] for row in found}

    def record_feedback(self, service_id: str, items: list[Mapping[str, Any]], issued: set[str] | None = None) -> int:
        """Keep feedback items once: the same item sent again is accepted and not stored twice.

        ``issued`` names the cards this service gave; items about other cards are kept, flagged.
        The outcome time is kept in one spelling per instant (``…00Z`` and ``…00.000Z`` are the
        same item); ``payload`` keeps the item as received.

        :raises ValueError: an ``outcomeTimestamp`` that is not a UTC instant (``validate_feedback`` refuses those).
        """
        stored = 0
        for item in items:
            row = {
                "service_id": service_id,
                "card_issued": None if issued is None else str(item["card"]) in issued,
                "card": str(item["card"]),
                "outcome": str(item["outcome"]),
                "outcome_timestamp": canonical_instant(str(item["outcomeTimestamp"])),
                "payload": dict(item),
                "received_at": now(),
            }
            try:
                with self.engine.begin() as conn:
                    conn.execute(feedback.insert().values(**row))
                stored += 1
            except sa.exc.IntegrityError:
                continue  # already recorded (CDS Hooks: feedback may be sent more than once)
        return stored

    def count(self, table: str) -> int:
        """Return the number of rows in a table (for tests and health checks)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(metadata.tables[table])).scalar() or 0)
