"""The revisions, oldest first: ``0001`` to ``0009`` are the home-made runner's versions 1 to 9, step for step.

Each revision is written against frozen table definitions, never against ``store.metadata``
(which moves on with the code), in SQL that SQLite and PostgreSQL both accept where they can.
Revisions go forward only: a release is never run backwards over its data (restore a backup).
"""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

JSON = sa.JSON().with_variant(JSONB(), "postgresql")  # frozen: JSON on SQLite, JSONB on PostgreSQL
