"""``scenarios``: the scenario library run through the engine, or against a running service over HTTP.

Both runners judge with the same comparison (``cds_server.scenarios.mismatches``); over
HTTP the decisions are rebuilt from the service's determination pages. How the results
are counted and shown is in ``scenario_report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cds_server.tools.answer_text import coverage_information, first_value
from cds_server.tools.common import CommandError
from cds_server.tools.scenario_report import Progress, ScenarioResult, render_summary, run_all, summary, verdict_of

if TYPE_CHECKING:
    from cds_server.engine import CriterionResult, OrderDecision
    from cds_server.scenarios import Scenario

SCENARIO_HOOKS = ("order-sign", "order-select")


SCENARIO_HELP = (
    "Run every scenario under scenarios/ through the engine (default) or against a running service "
    "(--url; it must run with CDS_AUTH_REQUIRED=false). Over HTTP, scenarios whose record is "
    "'unavailable' are skipped (a request cannot say so), and autoApproval is read from pa-needed, "
    "so the server needs CDS_AUTO_APPROVAL=true (the default)."
)


def register(commands: Any) -> None:
    """Add ``scenarios`` to the command line."""
    scenarios = commands.add_parser(
        "scenarios", help="run the scenario library and compare with the expected decisions", description=SCENARIO_HELP
    )
    scenarios.add_argument("--url", help="base URL of a running service, e.g. http://127.0.0.1:8080")
    scenarios.add_argument("--filter", default="", metavar="TEXT", help="only scenarios whose name contains TEXT")
    scenarios.add_argument("--hook", choices=SCENARIO_HOOKS, default="order-sign", help="hook to send (with --url)")
    scenarios.add_argument("--json", action="store_true", help="print the results as JSON")
    scenarios.set_defaults(run=cmd_scenarios)


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
        return verdict_of(scenario, problems)

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
            return verdict_of(scenario, [f"HTTP {answer.status_code}: {'; '.join(issues) or 'not a JSON answer'}"])
        decisions, notes = _decisions(payload, get)
        problems = mismatches(scenario, decisions)
        return verdict_of(scenario, problems + notes if problems else [])

    try:
        yield run
    finally:
        session.close()


def _decisions(payload: Mapping[str, Any], get: Callable[[str], Any]) -> tuple[list[OrderDecision], list[str]]:
    """The engine decision behind each annotated order, read from its determination page.

    An order the engine did not decide (no CarePath service, a technical answer) is a note
    shown with the mismatches, not a decision.
    """
    decisions, notes = [], []
    for action in payload.get("systemActions", []):
        info = coverage_information(action.get("resource", {}))
        aid = first_value(info, "coverage-assertion-id")
        det = get(f"/determinations/{aid}")
        decision = decision_from_determination(det.json(), info) if det.status_code == 200 else None
        if decision is None:
            notes.append(f"{aid}: no engine decision ({first_value(info, 'covered')}/{first_value(info, 'pa-needed')})")
        else:
            decisions.append(decision)
    return decisions, notes


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
        auto_approval=outcome is Outcome.CRITERIA_MET and first_value(info, "pa-needed") == "satisfied",
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
