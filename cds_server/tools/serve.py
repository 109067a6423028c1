"""``serve``: start the service, becoming gunicorn (or Flask's development server with ``--dev``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from cds_server.tools.common import ROOT, CommandError


def register(commands: Any) -> None:
    """Add ``serve`` to the command line."""
    serve = commands.add_parser("serve", help="start the service (gunicorn with gunicorn.conf.py)")
    serve.add_argument("--host", help="address to bind (default: $HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default: $PORT, else 8080)")
    serve.add_argument("--workers", type=_positive, help="gunicorn sync workers (default: $WORKERS, else 3)")
    serve.add_argument("--dev", action="store_true", help="Flask's development server instead of gunicorn")
    serve.set_defaults(run=cmd_serve)


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1-65535)")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def serve_command(
    host: str | None, port: int | None, workers: int | None, dev: bool, environ: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """Return the argv and environment ``serve`` replaces itself with.

    A separate function so the exact command can be tested without serving. The
    process settings go through HOST/PORT/WORKERS because gunicorn.conf.py reads
    them (as in ``make serve``); options left out keep what the environment says.
    The repository goes on PYTHONPATH so ``wsgi:app`` imports from any directory.
    """
    env = dict(environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), environ.get("PYTHONPATH", "")) if p)
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            env[name] = str(value)
    if dev:
        bind = ["--host", env.get("HOST", "127.0.0.1"), "--port", env.get("PORT", "8080")]
        return [sys.executable, "-m", "flask", "--app", "cds_server.web.app:create_app()", "run", *bind], env
    config = str(ROOT / "gunicorn.conf.py")
    return [sys.executable, "-m", "gunicorn", "--config", config, "--pythonpath", str(ROOT), "wsgi:app"], env


def cmd_serve(args: argparse.Namespace) -> int:
    """Become the server process (exec), so signals reach gunicorn directly and shutdown stays graceful."""
    argv, env = serve_command(args.host, args.port, args.workers, args.dev, os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise CommandError(f"cannot start {' '.join(argv[1:3])}: {exc.strerror}") from exc
    return 0  # not reached: exec does not return
