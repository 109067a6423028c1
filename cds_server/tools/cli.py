"""The command line: ``python -m cds_server COMMAND`` (``--help`` lists the commands).

One entry point for the things people do by hand: start the service, try a
request, check a CarePath, run the scenario library, read a questionnaire,
migrate the database. Every command goes through the same code as the HTTP
service (the app factory, the scenario helpers, the CarePath checker, the
migrations) so what it says is what the service would do. Input mistakes end
with one line on stderr, never a traceback. Exit codes: 0 ok, 1 a failure (a
mismatch, an invalid file, an error answer), 2 a usage error.

This module only dispatches; each command family is a module of its own
(``serve``, ``evaluate``, ``scenario_runs``, ``questionnaire``, ``db``) with a
``register`` that declares its arguments.
"""

from __future__ import annotations

import argparse
import sys

from cds_server.tools import db, evaluate, questionnaire, scenario_runs, serve
from cds_server.tools.common import PROG, CommandError


def main(argv: list[str] | None = None) -> int:
    """Run one command and return the process exit code (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2); argparse has already said why
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code: int = args.run(args)
    except CommandError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return code


def build_parser() -> argparse.ArgumentParser:
    """Declare every command; heavy imports wait until a command runs so ``--help`` stays instant."""
    parser = argparse.ArgumentParser(prog=PROG, description="CarePath CDS Hooks service: command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(commands)
    evaluate.register(commands)
    check = commands.add_parser("validate-carepath", help="check CarePath files against the schema and the engine")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(run=cmd_validate_carepath)
    scenario_runs.register(commands)
    questionnaire.register(commands)
    db.register(commands)
    return parser


def cmd_validate_carepath(args: argparse.Namespace) -> int:
    """Delegate to the content author's checker, so both commands always agree."""
    from cds_server.tools import carepath_check

    return carepath_check.main(list(args.files))
