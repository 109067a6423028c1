"""The command line: ``python -m cds_server COMMAND`` (``--help`` lists the commands).

One entry point for the things people do by hand: start the service, try a
request, check a CarePath, run the scenario library, read a questionnaire.
Every command goes through the same code as the HTTP service (the app factory,
the scenario helpers, the CarePath checker) so what it says is what the
service would do. Input mistakes end with one line on stderr, never a
traceback. Exit codes: 0 ok, 1 a failure (a mismatch, an invalid file, an
error answer), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from flask import Flask

    from cds_server.engine import CriterionResult, OrderDecision
    from cds_server.scenarios import Scenario

PROG = "python -m cds_server"
ROOT = Path(__file__).resolve().parents[2]
COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
SCENARIO_HOOKS = ("order-sign", "order-select")


class CommandError(Exception):
    """A problem the user can fix (bad input, unreachable server): printed as one line, no traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


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

    serve = commands.add_parser("serve", help="start the service (gunicorn with gunicorn.conf.py)")
    serve.add_argument("--host", help="address to bind (default: $HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default: $PORT, else 8080)")
    serve.add_argument("--workers", type=_positive, help="gunicorn sync workers (default: $WORKERS, else 3)")
    serve.add_argument("--dev", action="store_true", help="Flask's development server instead of gunicorn")
    serve.set_defaults(run=cmd_serve)

    evaluate = commands.add_parser(
        "evaluate", help="run one CDS Hooks request in-process and show the decision", description=EVALUATE_HELP
    )
    evaluate.add_argument("request", metavar="REQUEST.json", help="the CDS Hooks request body; '-' reads stdin")
    evaluate.add_argument("--json", action="store_true", help="print the raw CDS Hooks response")
    evaluate.add_argument(
        "--hook-service", metavar="ID", help="service to call (default: crd-<the request's hook>, e.g. crd-order-sign)"
    )
    evaluate.set_defaults(run=cmd_evaluate)

    check = commands.add_parser("validate-carepath", help="check CarePath files against the schema and the engine")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(run=cmd_validate_carepath)

    scenarios = commands.add_parser(
        "scenarios", help="run the scenario library and compare with the expected decisions", description=SCENARIO_HELP
    )
    scenarios.add_argument("--url", help="base URL of a running service, e.g. http://127.0.0.1:8080")
    scenarios.add_argument("--filter", default="", metavar="TEXT", help="only scenarios whose name contains TEXT")
    scenarios.add_argument("--hook", choices=SCENARIO_HOOKS, default="order-sign", help="hook to send (with --url)")
    scenarios.add_argument("--json", action="store_true", help="print the results as JSON")
    scenarios.set_defaults(run=cmd_scenarios)

    questionnaire = commands.add_parser("questionnaire", help="print the DTR Questionnaire of a CarePath service")
    questionnaire.add_argument("service", metavar="SERVICE", help="service id (e.g. mri) or Questionnaire id")
    questionnaire.set_defaults(run=cmd_questionnaire)
    return parser


EVALUATE_HELP = (
    "Send the request through the real app in this process (authentication off, a throw-away SQLite "
    "database, CarePaths and settings from CDS_* variables) and print, per order, the coverage "
    "information and the criterion-by-criterion decision behind it, then the cards."
)
SCENARIO_HELP = (
    "Run every scenario under scenarios/ through the engine (default) or against a running service "
    "(--url; it must run with CDS_AUTH_REQUIRED=false). Over HTTP, scenarios whose record is "
    "'unavailable' are skipped (a request cannot say so), and autoApproval is read from pa-needed, "
    "so the server needs CDS_AUTO_APPROVAL=true (the default)."
)


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


# --- serve ------------------------------------------------------------------------------


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


# --- the app, in this process --------------------------------------------------------------


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


# --- evaluate ----------------------------------------------------------------------------


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


def coverage_information(resource: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The coverage information this answer added to an order (the last extension), as url → values."""
    found = [e for e in resource.get("extension", []) if e.get("url") == COVERAGE_INFORMATION]
    out: dict[str, list[Any]] = {}
    for part in found[-1]["extension"] if found else []:
        value = next((v for k, v in part.items() if k.startswith("value")), None)
        out.setdefault(part["url"], []).append(value)
    return out


def assertion_ids(payload: Mapping[str, Any]) -> list[str]:
    """The coverage-assertion-id of every order the answer annotated."""
    ids = []
    for action in payload.get("systemActions", []):
        ids += coverage_information(action.get("resource", {})).get("coverage-assertion-id", [])
    return ids


@dataclass(frozen=True)
class Symbols:
    """Status marks for criterion results; ASCII when the terminal cannot show the nicer ones."""

    met: str
    not_met: str
    unknown: str

    def of(self, result: str) -> str:
        return {"met": self.met, "not-met": self.not_met}.get(result, self.unknown)


def symbols_for(stream: TextIO) -> Symbols:
    """✓/✗ on a UTF-8 stream, +/- otherwise (a Windows console or LANG=C must not crash the output)."""
    try:
        "✓✗—".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return Symbols("+", "-", "?")
    return Symbols("✓", "✗", "?")


_SYSTEMS = {
    "http://www.ama-assn.org/go/cpt": "CPT",
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "HCPCS",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://snomed.info/sct": "SNOMED",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
}


def order_codes(resource: Mapping[str, Any]) -> str:
    """The order's codes as people say them ("CPT 72141"), with its text when it has one."""
    for key in ("code", "codeCodeableConcept", "medicationCodeableConcept"):
        concept = resource.get(key)
        if isinstance(concept, Mapping):
            codes = [
                f"{_SYSTEMS.get(c.get('system', ''), c.get('system', '?'))} {c.get('code')}"
                for c in concept.get("coding", [])
            ]
            text = concept.get("text")
            return " ".join(p for p in (", ".join(codes), f"({text})" if text else "") if p) or "(no code)"
    return "(no code)"


def render_response(payload: Mapping[str, Any], determinations: Mapping[str, Any], marks: Symbols) -> str:
    """The answer as text: one block per annotated order, then the cards."""
    lines: list[str] = []
    actions = payload.get("systemActions", [])
    if not actions:
        lines.append("No coverage information in the answer (no order in scope, or all already annotated).")
    for action in actions:
        lines += render_order(action.get("resource", {}), determinations, marks)
        lines.append("")
    cards = payload.get("cards", [])
    numbers = [n for a in actions for n in coverage_information(a.get("resource", {})).get("satisfied-pa-id", [])]
    lines.append(f"Cards ({len(cards)})")
    lines += [f"  [{card.get('indicator', '?')}] {_dry_run_text(card.get('summary', ''), numbers)}" for card in cards]
    return "\n".join(lines) + "\n"


DRY_RUN = "(dry run: not issued)"


def _dry_run(number: str | None) -> str | None:
    """``evaluate`` decides in a throw-away database: a number it shows was never issued to anyone."""
    return f"{number} {DRY_RUN}" if number else number


def _dry_run_text(text: str, numbers: Sequence[str]) -> str:
    """A card's text as ``evaluate`` shows it: each PA number in it said, as in the table, not issued.

    The service's card says "prior authorization PA-… issued"; in a dry run nothing was, so the
    number is followed by the table's words instead (an "issued" right after it is replaced).
    """
    for number in numbers:
        text = re.sub(rf"{re.escape(number)}(?: issued\b)?", f"{number} {DRY_RUN}", text)
    return text


def render_order(resource: Mapping[str, Any], determinations: Mapping[str, Any], marks: Symbols) -> list[str]:
    """One order: its coverage information as a two-column table, then the decision's criterion tree."""
    info = coverage_information(resource)
    aid = _first(info, "coverage-assertion-id")
    det = determinations.get(aid or "") or {}
    rows = [
        ("Coverage", _first(info, "coverage", lambda v: v.get("reference"))),
        ("Covered", _first(info, "covered")),
        ("PA needed", _first(info, "pa-needed")),
        ("Doc needed", ", ".join(info.get("doc-needed", [])) or "no"),
        ("PA number", _dry_run(_first(info, "satisfied-pa-id"))),
        ("Expires", _first(info, "expiry-date")),
        ("Assertion", aid),
        *[("Reason", r.get("text", "")) for r in info.get("reason", [])],
        *[("Questionnaire", q) for q in info.get("questionnaire", [])],
    ]
    if det:
        service = det.get("service") or {}
        carepath = det.get("carePath") or {}
        rows += [
            ("Decision", f"{det.get('outcome')}: {det.get('summary', '')}"),
            ("Service", f"{service.get('id')} ({service.get('title')})" if service else "none (no CarePath service)"),
            ("CarePath", f"{carepath.get('id')} {carepath.get('version')}" if carepath else None),
            ("Evaluated", det.get("evaluationDate")),
            ("Questions", ", ".join(det.get("questions") or []) or None),
            ("Failing", ", ".join(det.get("failing") or []) or None),
        ]
    ref = f"{resource.get('resourceType')}/{resource.get('id')}"
    lines = [f"{ref}: {order_codes(resource)}"]
    lines += [f"  {label:<14}{value}" for label, value in rows if value not in (None, "")]
    criteria = det.get("criteria") or []
    if criteria:
        legend = f"{marks.met} met  {marks.not_met} not met  {marks.unknown} unknown"
        lines.append(f"  Criteria      ({legend}; for a non-indication, met = present)")
        lines += criterion_lines(criteria, marks)
    return lines


def _first(info: Mapping[str, list[Any]], key: str, pick: Callable[[Any], Any] | None = None) -> Any:
    values = info.get(key) or [None]
    return pick(values[0]) if pick and isinstance(values[0], Mapping) else values[0]


def criterion_lines(roots: Sequence[Mapping[str, Any]], marks: Symbols) -> list[str]:
    """The criterion tree, indented by depth, ids in one column: mark, id, text, and why."""
    flat: list[tuple[int, Mapping[str, Any]]] = []

    def walk(node: Mapping[str, Any], depth: int) -> None:
        flat.append((depth, node))
        for child in node.get("children", []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    width = max(2 * depth + len(str(node.get("id"))) for depth, node in flat) + 2
    lines = []
    for depth, node in flat:
        head = f"{'  ' * depth}{marks.of(str(node.get('result')))} {node.get('id')}"
        reason = f" — {node['reason']}" if node.get("reason") else ""
        lines.append(f"    {head:<{width}}  {node.get('text', '')}{reason}")
    return lines


# --- validate-carepath -------------------------------------------------------------------


def cmd_validate_carepath(args: argparse.Namespace) -> int:
    """Delegate to the content author's checker, so both commands always agree."""
    from cds_server.tools import carepath_check

    return carepath_check.main(list(args.files))


# --- scenarios ---------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """One scenario's verdict."""

    name: str
    description: str
    status: str  # passed, failed or skipped
    problems: list[str] = field(default_factory=list)

    @property
    def folder(self) -> str:
        return self.name.split("/", 1)[0] if "/" in self.name else "."


class Progress:
    """A one-line bar on a terminal; on a pipe or a CI log, a count every tenth instead of redraws."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every = max(1, total // 10)

    def step(self, done: int, label: str) -> None:
        """Report that ``done`` scenarios are finished, ``label`` the last one."""
        if self.tty:
            filled = self.WIDTH * done // max(1, self.total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {done}/{self.total} {label[:40]:<40}")
        elif done % self.every == 0 or done == self.total:
            self.stream.write(f"scenarios: {done}/{self.total}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def select_scenarios(text: str) -> list[Scenario]:
    """The library's scenarios whose name contains ``text``.

    :raises CommandError: a malformed scenario file (1) or nothing matches (2).
    """
    from cds_server.scenarios import ScenarioError, iter_scenarios

    try:
        chosen = [s for s in iter_scenarios() if text in s.name]
    except (ScenarioError, ValueError) as exc:
        raise CommandError(f"a scenario file is malformed: {exc}") from exc
    if not chosen:
        raise CommandError(f"no scenario name contains {text!r}", code=2)
    return chosen


@contextmanager
def engine_runner() -> Iterator[Callable[[Scenario], ScenarioResult]]:
    """Judge a scenario as tests/test_scenarios.py does: the engine on the shipped CarePaths."""
    from cds_server.carepath_store import load_carepaths
    from cds_server.scenarios import mismatches, run_scenario

    carepaths = load_carepaths()

    def run(scenario: Scenario) -> ScenarioResult:
        problems = mismatches(scenario, run_scenario(scenario, carepaths))
        return _verdict(scenario, problems)

    yield run


@contextmanager
def http_runner(url: str, hook: str) -> Iterator[Callable[[Scenario], ScenarioResult]]:
    """Judge a scenario through a running service: its answer, then the determination behind each order.

    The decisions are rebuilt from ``/determinations/<id>`` so the very same
    comparison (``scenarios.mismatches``) applies.
    """
    import requests

    from cds_server.scenarios import hook_request, mismatches

    session = requests.Session()
    session.trust_env = False  # talk to the URL given, not through a proxy from the environment
    base = url.rstrip("/")

    def get(path: str) -> requests.Response:
        return _http(session, "GET", base + path, headers={"Accept": "application/json"})

    def run(scenario: Scenario) -> ScenarioResult:
        if not scenario.record_available:
            return ScenarioResult(scenario.name, scenario.description, "skipped", ["record unavailable: engine only"])
        answer = _http(session, "POST", f"{base}/cds-services/crd-{hook}", json=hook_request(scenario, hook=hook))
        payload = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else None
        if answer.status_code != 200 or not isinstance(payload, dict):
            issues = [i.get("diagnostics", "") for i in (payload or {}).get("issue", [])]
            return _verdict(scenario, [f"HTTP {answer.status_code}: {'; '.join(issues) or 'not a JSON answer'}"])
        decisions, notes = [], []
        for action in payload.get("systemActions", []):
            info = coverage_information(action.get("resource", {}))
            aid = _first(info, "coverage-assertion-id")
            det = get(f"/determinations/{aid}")
            decision = decision_from_determination(det.json(), info) if det.status_code == 200 else None
            if decision is None:
                notes.append(f"{aid}: no engine decision ({_first(info, 'covered')}/{_first(info, 'pa-needed')})")
            else:
                decisions.append(decision)
        problems = mismatches(scenario, decisions)
        return _verdict(scenario, problems + notes if problems else [])

    try:
        yield run
    finally:
        session.close()


def _http(session: Any, method: str, url: str, **kw: Any) -> Any:
    """One request; an unreachable server or refused credentials end the run with one clear line."""
    import requests

    try:
        response = session.request(method, url, timeout=30, **kw)
    except requests.RequestException as exc:
        raise CommandError(f"cannot reach {url} ({exc.__class__.__name__}): is the service running?") from exc
    if response.status_code in (401, 403):
        raise CommandError(f"{url} answered {response.status_code}: run the service with CDS_AUTH_REQUIRED=false")
    return response


def decision_from_determination(det: Mapping[str, Any], info: Mapping[str, list[Any]]) -> OrderDecision | None:
    """Rebuild the engine's decision from a determination page (None when no engine decision was made).

    The page does not carry ``autoApproval``; it shows as ``pa-needed`` =
    ``satisfied`` on a met order when the server auto-approves (its default).
    """
    from cds_server.engine import OrderDecision, Outcome

    if det.get("outcome") not in {o.value for o in Outcome}:
        return None
    outcome = Outcome(det["outcome"])
    return OrderDecision(
        order_ref=str(det.get("order")),
        outcome=outcome,
        summary=str(det.get("summary", "")),
        evaluation_date=str(det.get("evaluationDate", "")),
        service_id=(det.get("service") or {}).get("id"),
        auto_approval=outcome is Outcome.CRITERIA_MET and _first(info, "pa-needed") == "satisfied",
        criteria=[_criterion(c) for c in det.get("criteria", [])],
        questions=list(det.get("questions", [])),
        failing=list(det.get("failing", [])),
    )


def _criterion(data: Mapping[str, Any]) -> CriterionResult:
    from cds_server.engine import CriterionResult, Tri

    return CriterionResult(
        id=data["id"],
        text=data.get("text", ""),
        cite=data.get("cite", ""),
        kind=data.get("kind", ""),
        result=Tri(data["result"]),
        reason=data.get("reason", ""),
        evidence=list(data.get("evidence", [])),
        questions=list(data.get("questions", [])),
        parameters=dict(data.get("parameters", {})),
        children=[_criterion(c) for c in data.get("children", [])],
        logic=data.get("logic", "leaf"),
    )


def _verdict(scenario: Scenario, problems: list[str]) -> ScenarioResult:
    return ScenarioResult(scenario.name, scenario.description, "failed" if problems else "passed", problems)


def run_all(
    scenarios: Sequence[Scenario], run: Callable[[Scenario], ScenarioResult], progress: Progress
) -> list[ScenarioResult]:
    """Run each scenario; one that crashes is a failure with its error, and the run goes on."""
    results: list[ScenarioResult] = []
    try:
        for done, scenario in enumerate(scenarios, 1):
            try:
                results.append(run(scenario))
            except CommandError:
                raise
            except Exception as exc:  # a broken scenario must not hide the verdict on the others
                results.append(_verdict(scenario, [f"error: {exc.__class__.__name__}: {exc}"]))
            progress.step(done, scenario.name)
    finally:
        progress.close()
    return results


def summary(results: Sequence[ScenarioResult], where: str) -> dict[str, Any]:
    """Counts overall and per folder, and every failure with what differed."""
    folders: dict[str, dict[str, int]] = {}
    for r in results:
        counts = folders.setdefault(r.folder, {"passed": 0, "failed": 0, "skipped": 0})
        counts[r.status] += 1
    total = {k: sum(c[k] for c in folders.values()) for k in ("passed", "failed", "skipped")}
    return {
        "target": where,
        "total": len(results),
        **total,
        "folders": dict(sorted(folders.items())),
        "failures": [
            {"name": r.name, "description": r.description, "problems": r.problems}
            for r in results
            if r.status == "failed"
        ],
        "skips": [{"name": r.name, "reason": "; ".join(r.problems)} for r in results if r.status == "skipped"],
    }


def render_summary(report: Mapping[str, Any]) -> str:
    """The summary as a table per folder, then each failure: expected vs got, one line per difference."""
    width = max([len("folder"), *map(len, report["folders"])]) + 2
    lines = [f"Scenarios ({report['target']})", f"{'folder':<{width}}{'passed':>8}{'failed':>8}{'skipped':>9}"]
    for folder, c in report["folders"].items():
        lines.append(f"{folder:<{width}}{c['passed']:>8}{c['failed']:>8}{c['skipped']:>9}")
    lines.append(f"{'total':<{width}}{report['passed']:>8}{report['failed']:>8}{report['skipped']:>9}")
    for failure in report["failures"]:
        lines += ["", f"FAIL {failure['name']}: {failure['description']}"]
        lines += [f"  {problem}" for problem in failure["problems"]]
    verdict = f"{report['failed']} of {report['total']} failed" if report["failed"] else "no failures"
    lines += ["", f"{report['passed']} passed, {report['failed']} failed, {report['skipped']} skipped: {verdict}"]
    return "\n".join(lines) + "\n"


def cmd_scenarios(args: argparse.Namespace) -> int:
    """Run the library (engine or --url), show progress on stderr, the summary on stdout; 1 if any fail."""
    if args.hook != "order-sign" and not args.url:
        raise CommandError("--hook applies to --url runs (in-process runs use the engine directly)", code=2)
    chosen = select_scenarios(args.filter)
    runner = http_runner(args.url, args.hook) if args.url else engine_runner()
    with runner as run:
        results = run_all(chosen, run, Progress(len(chosen), sys.stderr))
    report = summary(results, f"{args.url.rstrip('/')}, {args.hook}" if args.url else "in-process engine")
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render_summary(report), end="")
    if args.json:
        print()
    return 1 if report["failed"] else 0


# --- questionnaire -----------------------------------------------------------------------


def questionnaire_ids(app: Flask) -> dict[str, str]:
    """Map each name a user may type (service id, and Questionnaire id) to the Questionnaire id.

    A service id two CarePaths share maps to nothing: then only the full id is unambiguous.
    """
    from cds_server.pipeline.questionnaires import questionnaire_id

    names: dict[str, str] = {}
    shared: set[str] = set()
    for carepath in app.extensions["cds"].carepaths:
        for service in carepath.services:
            qid = questionnaire_id(carepath, service)
            names[qid] = qid
            if service.id in names and names[service.id] != qid:
                shared.add(service.id)
            names.setdefault(service.id, qid)
    return {name: qid for name, qid in names.items() if name not in shared}


def cmd_questionnaire(args: argparse.Namespace) -> int:
    """Print the Questionnaire exactly as GET /fhir/Questionnaire/<id> serves it."""
    with in_process_app() as app:
        names = questionnaire_ids(app)
        qid = names.get(args.service)
        if qid is None:
            services = sorted(n for n, q in names.items() if n != q)
            raise CommandError(f"unknown service {args.service!r}; available: {', '.join(services)}", code=2)
        response = app.test_client().get(f"/fhir/Questionnaire/{qid}")
    print(json.dumps(response.get_json(), indent=2, ensure_ascii=False))
    return 0
