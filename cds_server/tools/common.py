"""What every command shares: the program name, the one-line error, and the app run in this process.

Commands raise :class:`CommandError` for a problem the user can fix; ``cli.main`` prints
it as one line (no traceback) and exits with its code.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

PROG = "python -m cds_server"
ROOT = Path(__file__).resolve().parents[2]


class CommandError(Exception):
    """A problem the user can fix (bad input, unreachable server): printed as one line, no traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def in_process_app() -> Iterator[Flask]:
    """The real app with authentication off and a throw-away database, closed afterwards.

    Settings still come from CDS_* variables (CarePaths, overrides, auto-approval),
    so a request is decided as the configured service would decide it, without
    touching its records or needing a token.
    """
    from cds_server.engine import InvalidCarePathError
    from cds_server.web.app import create_app

    with tempfile.TemporaryDirectory(prefix="cds-cli-") as tmp:
        try:
            app = create_app(
                {
                    "AUTH_REQUIRED": False,
                    "DATABASE_URL": f"sqlite:///{Path(tmp) / 'cli.sqlite'}",
                    "DEMO_ENABLED": False,
                    "LOG_LEVEL": "ERROR",
                }
            )
        except InvalidCarePathError as exc:
            raise CommandError(f"a configured CarePath is invalid: {exc}") from exc
        runtime = app.extensions["cds"]
        try:
            yield app
        finally:
            runtime.pool.shutdown(wait=True)
            runtime.session.close()
            runtime.store.close()
