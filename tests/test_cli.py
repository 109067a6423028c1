"""The command line (``python -m cds_server``): each command as a user runs it, outputs and exit codes."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fhir.resources.R4B.questionnaire import Questionnaire

from cds_server.carepath_store import DEFAULT_CAREPATHS
from cds_server.scenarios import Scenario
from cds_server.tools import scenario_runs
from cds_server.tools.answer_text import COVERAGE_INFORMATION
from cds_server.tools.cli import main
from cds_server.tools.scenario_report import Progress
from cds_server.tools.serve import serve_command

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "order-sign-mri.json"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- the entry point ---------------------------------------------------------------------


def test_python_dash_m_help_lists_the_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cds_server", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    for command in ("serve", "evaluate", "validate-carepath", "scenarios", "questionnaire", "db"):
        assert command in done.stdout


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--bogus")[0] == 2
    assert run(capsys, "serve", "--port", "0")[0] == 2
    code, _, err = run(capsys)
    assert code == 2 and "COMMAND" in err


# --- serve: the command it execs, never a server that runs forever -------------------------


def test_serve_execs_gunicorn_with_the_config_and_process_settings() -> None:
    argv, env = serve_command("0.0.0.0", 9000, 2, False, {"PATH": "/bin", "PYTHONPATH": "/elsewhere"})
    assert argv == [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(ROOT / "gunicorn.conf.py"),
        "--pythonpath",
        str(ROOT),
        "wsgi:app",
    ]
    assert (env["HOST"], env["PORT"], env["WORKERS"], env["PATH"]) == ("0.0.0.0", "9000", "2", "/bin")
    assert env["PYTHONPATH"] == f"{ROOT}{os.pathsep}/elsewhere"


def test_serve_keeps_environment_settings_it_is_not_given() -> None:
    _, env = serve_command(None, None, None, False, {"PORT": "7000"})
    assert env["PORT"] == "7000" and "HOST" not in env and "WORKERS" not in env


def test_serve_dev_uses_flask(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execvpe", lambda file, args, env: calls.append((file, args, env)))
    assert main(["serve", "--dev", "--port", "8123"]) == 0
    file, args, env = calls[0]
    assert file == sys.executable
    assert args[1:] == [
        "-m",
        "flask",
        "--app",
        "cds_server.web.app:create_app()",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
    ]
    assert env["PORT"] == "8123"


# --- evaluate ------------------------------------------------------------------------------


def test_evaluate_shows_the_coverage_information_and_the_criteria(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "evaluate", str(EXAMPLE))
    assert code == 0, err
    assert "ServiceRequest/sr-mri: CPT 72141" in out
    assert re.search(r"PA needed\s+satisfied", out)
    assert re.search(r"PA number\s+PA-[0-9A-Z]{10} \(dry run: not issued\)", out)
    assert re.search(r"Assertion\s+ca-[0-9a-f]{32}", out)
    assert re.search(r"Decision\s+criteria-met", out)
    for criterion in ("MRI-I", "MRI-I2.weeks", "MRI-NI1"):
        assert re.search(rf"[✓✗?] {re.escape(criterion)}\s", out), criterion
    assert "Cards (2)" in out and "prior authorization PA-" in out
    number = re.search(r"PA number\s+(PA-[0-9A-Z]{10})", out)
    assert number, out
    said = re.findall(rf"{number[1]}[^\n]*", out)
    assert len(said) == 2 and all(s.startswith(f"{number[1]} (dry run: not issued)") for s in said), said
    assert " issued" not in out.replace("not issued", ""), "the card says the same as the table"


def test_a_dry_run_card_text_says_not_issued_wherever_the_number_is() -> None:
    from cds_server.tools.answer_text import _dry_run_text

    assert _dry_run_text("MRI: meets the guideline; prior authorization PA-ABC issued", ["PA-ABC"]) == (
        "MRI: meets the guideline; prior authorization PA-ABC (dry run: not issued)"
    )
    assert _dry_run_text("MRI: approved, PA-ABC until 2027-06-04", ["PA-ABC"]) == (
        "MRI: approved, PA-ABC (dry run: not issued) until 2027-06-04"
    )
    assert _dry_run_text("MRI: 4 answers needed", ["PA-ABC"]) == "MRI: 4 answers needed"


def test_evaluate_json_is_the_raw_cds_hooks_response(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "evaluate", "--json", str(EXAMPLE))
    assert code == 0
    payload = json.loads(out)
    resource = payload["systemActions"][0]["resource"]
    assert resource["id"] == "sr-mri"
    assert any(e["url"] == COVERAGE_INFORMATION for e in resource["extension"])
    assert payload["cards"]


def test_evaluate_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(EXAMPLE.read_text()))
    code, out, _ = run(capsys, "evaluate", "-")
    assert code == 0 and "PA needed" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ('{"hook": "order-sign",', "not valid JSON: "),
        ("[1, 2]", "expected a JSON object (a CDS Hooks request), got an array"),
    ],
)
def test_evaluate_bad_input_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "request.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run(capsys, "evaluate", str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"python -m cds_server evaluate: error: {path}: {message}")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_evaluate_error_answer_prints_the_issues(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body = json.loads(EXAMPLE.read_text())
    del body["context"]["patientId"]
    path = tmp_path / "request.json"
    path.write_text(json.dumps(body))
    code, out, err = run(capsys, "evaluate", str(path))
    assert code == 1 and out == ""
    assert "HTTP 400" in err and "$.context" in err and "patientId" in err


def test_evaluate_unknown_service_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "evaluate", "--hook-service", "crd-nothing", str(EXAMPLE))
    assert code == 2 and "crd-order-sign" in err


# --- validate-carepath ---------------------------------------------------------------------


def test_validate_carepath_accepts_the_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate-carepath", str(DEFAULT_CAREPATHS[0]))
    assert code == 0 and out.startswith("ok ")


def test_validate_carepath_names_the_json_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = json.loads(DEFAULT_CAREPATHS[0].read_text())
    doc["services"][0]["title"] = 5
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc))
    code, out, _ = run(capsys, "validate-carepath", str(broken))
    assert code == 1
    assert "invalid broken.json: $.services[0].title: 5 is not of type 'string'" in out


# --- scenarios -----------------------------------------------------------------------------


def test_scenarios_in_process_subset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "scenarios", "--filter", "mri/")
    assert code == 0, out
    assert re.search(r"^mri\s+\d+\s+0\s+0$", out, re.M)
    assert "0 failed, 0 skipped: no failures" in out
    assert "scenarios: " in err  # not a terminal: periodic counts, no bar


def test_scenarios_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "scenarios", "--filter", "routing/", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["total"] == report["passed"] == report["folders"]["routing"]["passed"] > 0
    assert report["failures"] == []


def test_scenarios_report_mismatches_and_fail(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = scenario_runs.select_scenarios

    def wrong_expectation(text: str) -> list[Scenario]:
        scenario = real(text)[0]
        expect = [{**scenario.expect[0], "outcome": "not-met"}, *scenario.expect[1:]]
        return [dataclasses.replace(scenario, expect=tuple(expect))]

    monkeypatch.setattr(scenario_runs, "select_scenarios", wrong_expectation)
    code, out, _ = run(capsys, "scenarios", "--filter", "mri/met-failed-conservative-care")
    assert code == 1
    assert "FAIL mri/met-failed-conservative-care" in out
    assert "outcome 'criteria-met', expected 'not-met'" in out


def test_scenarios_filter_matching_nothing_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "scenarios", "--filter", "no-such-scenario")
    assert code == 2 and "no scenario name contains 'no-such-scenario'" in err


def test_progress_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(4, stream)
    for done in range(1, 5):
        progress.step(done, f"s{done}")
    progress.close()
    text = stream.getvalue()
    assert text.count("\r[") == 4 and "[" + "#" * Progress.WIDTH + "] 4/4" in text and text.endswith("\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def running_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real service under gunicorn, started with the very command ``serve`` execs."""
    tmp = tmp_path_factory.mktemp("server")
    port = _free_port()
    environ = {
        **os.environ,
        "CDS_AUTH_REQUIRED": "false",
        "CDS_DEMO_ENABLED": "false",
        "CDS_DATABASE_URL": f"sqlite:///{tmp / 'server.sqlite'}",
        "LOG_LEVEL": "warning",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
    }
    argv, env = serve_command("127.0.0.1", port, 1, False, environ)
    log = (tmp / "server.log").open("w")
    process = subprocess.Popen(argv, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # gunicorn listens before its worker has booted
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the server did not start:\n" + (tmp / "server.log").read_text())
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def test_scenarios_against_a_running_server(capsys: pytest.CaptureFixture[str], running_server: str) -> None:
    code, out, _ = run(capsys, "scenarios", "--url", running_server, "--filter", "mri/")
    assert code == 0, out
    assert f"Scenarios ({running_server}, order-sign)" in out
    assert re.search(r"^mri\s+\d+\s+0\s+0$", out, re.M)


def test_scenarios_over_http_skip_unavailable_records(capsys: pytest.CaptureFixture[str], running_server: str) -> None:
    code, out, _ = run(
        capsys,
        "scenarios",
        "--url",
        running_server,
        "--hook",
        "order-select",
        "--filter",
        "esi/record-unavailable",
        "--json",
    )
    report = json.loads(out)
    assert code == 0
    assert report["skipped"] == report["total"] > 0
    assert all("record unavailable" in s["reason"] for s in report["skips"])


def test_scenarios_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "scenarios", "--url", f"http://127.0.0.1:{_free_port()}", "--filter", "mri/met")
    assert code == 1 and out == ""
    assert "cannot reach" in err and "is the service running?" in err and "Traceback" not in err


def test_scenarios_hook_needs_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "scenarios", "--hook", "order-select")[0] == 2


# --- questionnaire -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mri", "neck-pain-mri"])
def test_questionnaire_is_a_valid_fhir_questionnaire(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, _ = run(capsys, "questionnaire", name)
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    questionnaire = Questionnaire.model_validate(data)
    assert questionnaire.id == "neck-pain-mri" and data["item"]


def test_unknown_questionnaire_lists_the_services(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "questionnaire", "knee")
    assert code == 2 and out == ""
    assert "unknown service 'knee'; available: " in err and "mri" in err and "physical-therapy" in err


# --- db ----------------------------------------------------------------------------------------


def test_db_upgrade_current_and_history(capsys: pytest.CaptureFixture[str], database_url: str) -> None:
    from cds_server.records import migrations

    head = migrations.head()
    code, out, _ = run(capsys, "db", "current", "--url", database_url)
    assert (code, out) == (0, f"none: an empty database (db upgrade brings it to {head})\n")
    code, out, _ = run(capsys, "db", "upgrade", "--url", database_url)
    assert code == 0 and out.startswith(f"database at revision {head} (applied 0001, 0002,")
    code, out, _ = run(capsys, "db", "upgrade", "--url", database_url)
    assert (code, out) == (0, f"database at revision {head}, already up to date\n")
    code, out, _ = run(capsys, "db", "current", "--url", database_url)
    assert (code, out) == (0, f"{head} (the newest this release knows)\n")
    code, out, _ = run(capsys, "db", "history")
    assert code == 0 and out.splitlines()[0].startswith("0001  first release") and head in out.splitlines()[-1]


def test_db_reads_the_services_database_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'configured.sqlite'}")
    assert run(capsys, "db", "upgrade")[0] == 0
    assert (tmp_path / "configured.sqlite").exists()


def test_db_refuses_a_newer_database_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'newer.sqlite'}"
    assert run(capsys, "db", "upgrade", "--url", url)[0] == 0
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099_future'"))
    engine.dispose()
    code, out, err = run(capsys, "db", "current", "--url", url)
    assert code == 0 and "0099_future (newer than this release" in out
    code, _, err = run(capsys, "db", "upgrade", "--url", url)
    assert code == 1 and err.startswith("python -m cds_server db: error: the database is at schema revision 0099_")
    assert err.count("\n") == 1, "one line, no traceback"


def test_db_unreachable_database_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "db", "current", "--url", "postgresql+psycopg://nobody@127.0.0.1:9/none")
    assert code == 1 and "cannot reach the database" in err and err.count("\n") == 1
    assert run(capsys, "db", "upgrade", "--url", "nonsense://")[0] == 2
