"""``evaluate``: one CDS Hooks request through the real app in this process, the decision shown readably."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from cds_server.tools.answer_text import assertion_ids, render_response, symbols_for
from cds_server.tools.common import CommandError, in_process_app

EVALUATE_HELP = (
    "Send the request through the real app in this process (authentication off, a throw-away SQLite "
    "database, CarePaths and settings from CDS_* variables) and print, per order, the coverage "
    "information and the criterion-by-criterion decision behind it, then the cards."
)


def register(commands: Any) -> None:
    """Add ``evaluate`` to the command line."""
    evaluate = commands.add_parser(
        "evaluate", help="run one CDS Hooks request in-process and show the decision", description=EVALUATE_HELP
    )
    evaluate.add_argument("request", metavar="REQUEST.json", help="the CDS Hooks request body; '-' reads stdin")
    evaluate.add_argument("--json", action="store_true", help="print the raw CDS Hooks response")
    evaluate.add_argument(
        "--hook-service", metavar="ID", help="service to call (default: crd-<the request's hook>, e.g. crd-order-sign)"
    )
    evaluate.set_defaults(run=cmd_evaluate)


def read_request(name: str, stdin: TextIO) -> tuple[str, dict[str, Any]]:
    """Return the request's text (sent as is, so the service judges it) and its parsed object."""
    label = "stdin" if name == "-" else name
    try:
        text = stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"{label}: no such file") from None
    except UnicodeDecodeError:
        raise CommandError(f"{label}: not UTF-8 text") from None
    except OSError as exc:
        raise CommandError(f"{label}: cannot read ({exc.strerror})") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{label}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(body, dict):
        kind = "an array" if isinstance(body, list) else f"a {type(body).__name__}"
        raise CommandError(f"{label}: expected a JSON object (a CDS Hooks request), got {kind}")
    return text, body


def choose_service(requested: str | None, body: Mapping[str, Any]) -> str:
    """The service to call: the one asked for, else the one for the request's hook."""
    from hooks import SERVICES

    if requested is not None:
        if requested not in SERVICES:
            raise CommandError(f"unknown service {requested!r}; choose one of {', '.join(SERVICES)}", code=2)
        return requested
    by_hook = f"crd-{body.get('hook')}"
    return by_hook if by_hook in SERVICES else "crd-order-sign"


def cmd_evaluate(args: argparse.Namespace) -> int:
    """POST the request to the in-process app; print the answer readably (or raw with --json)."""
    text, body = read_request(args.request, sys.stdin)
    service = choose_service(args.hook_service, body)
    with in_process_app() as app:
        client = app.test_client()
        response = client.post(f"/cds-services/{service}", data=text.encode(), content_type="application/json")
        payload = response.get_json(silent=True)
        if args.json:
            print(json.dumps(payload, indent=2, ensure_ascii=False))
            return 0 if response.status_code == 200 else 1
        if response.status_code != 200:
            print_error_answer(response.status_code, payload, sys.stderr)
            return 1
        determinations = {}
        for aid in assertion_ids(payload):
            found = client.get(f"/determinations/{aid}", headers={"Accept": "application/json"})
            if found.status_code == 200:
                determinations[aid] = found.get_json()
    sys.stdout.write(render_response(payload, determinations, symbols_for(sys.stdout)))
    return 0


def print_error_answer(status: int, payload: Any, out: TextIO) -> None:
    """Print an OperationOutcome answer: the status, then one line per issue with its JSON path."""
    issues = payload.get("issue", []) if isinstance(payload, Mapping) else []
    print(f"error: the service answered HTTP {status}", file=out)
    for issue in issues:
        where = ", ".join(issue.get("expression") or [])
        print(f"  {where + ': ' if where else ''}{issue.get('diagnostics', issue.get('code', ''))}", file=out)
