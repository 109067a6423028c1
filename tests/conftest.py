"""Shared fixtures: the default CarePath, and a real FHIR server for the fallback tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from cds_server.carepath_store import DEFAULT_CAREPATHS, load_carepath
from cds_server.engine import CarePath


@pytest.fixture(scope="session")
def neck_pain() -> CarePath:
    """The Neck Pain CarePath as shipped."""
    return load_carepath(DEFAULT_CAREPATHS[0])


# --- a real FHIR server (Medplum's FHIR router behind tests/fhir_server/server.mjs) ----------

FHIR_SERVER_DIR = Path(__file__).parent / "fhir_server"
FHIR_TOKEN = "test-access-token-not-a-secret"


@dataclass
class FhirTestServer:
    """A running in-memory FHIR R4 server for one test session."""

    base: str
    token: str
    process: subprocess.Popen[str]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/fhir+json"}

    def load(self, resources: list[Mapping[str, Any]]) -> None:
        """PUT resources (ids kept) in one transaction."""
        entries = [
            {"resource": dict(r), "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ]
        response = requests.post(
            self.base,
            json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
            headers=self._headers(),
            timeout=10,
        )
        response.raise_for_status()

    def requests_seen(self) -> list[dict[str, Any]]:
        """Return the requests the server received since the last reset (method, url, token)."""
        seen: list[dict[str, Any]] = requests.get(self.base.removesuffix("/fhir") + "/__requests", timeout=5).json()
        return seen

    def reset_log(self) -> None:
        requests.delete(self.base.removesuffix("/fhir") + "/__requests", timeout=5)


def _start_fhir_server(page_size: int, token: str = FHIR_TOKEN, cors: bool = False) -> FhirTestServer:
    """Start the server; with ``token=""`` it asks for no token (a FHIR server with no auth server), with
    ``cors`` it answers browsers from any origin (as the sandbox needs)."""
    env = {**os.environ, "FHIR_TOKEN": token, "PAGE_SIZE": str(page_size), "FHIR_CORS": "1" if cors else ""}
    process = subprocess.Popen(
        ["node", "server.mjs", "0"],
        cwd=FHIR_SERVER_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("listening "):
            return FhirTestServer(f"http://127.0.0.1:{int(line.split()[1])}/fhir", token, process)
        if process.poll() is not None:
            break
    process.kill()
    process.wait(timeout=10)
    process.stdout.close()
    raise RuntimeError("the test FHIR server did not start")


def _require_node() -> None:
    """Skip on a laptop without Node and the server's packages; fail under CI, where they are required."""
    installed = (FHIR_SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").exists() and shutil.which("node")
    if not installed:
        message = "test FHIR server not installed: run `npm ci --prefix tests/fhir_server` (make test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirTestServer]:
    """A real FHIR server on loopback; skipped on a laptop without Node, required under CI."""
    _require_node()
    yield from _serve(_start_fhir_server(page_size=10))


@pytest.fixture(scope="session")
def open_fhir_server() -> Iterator[FhirTestServer]:
    """The same server asking for no token and open to browsers (``FHIR_CORS=1``): the local server of
    docs/connecting-an-ehr.md for the CDS Hooks sandbox and the CRD request generator (which then sends an
    empty access token)."""
    _require_node()
    yield from _serve(_start_fhir_server(page_size=10, token="", cors=True))


def _serve(server: FhirTestServer) -> Iterator[FhirTestServer]:
    try:
        yield server
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)
        if server.process.stdout:
            server.process.stdout.close()


# --- databases: the embedded SQLite default and a real PostgreSQL --------------------------

PG_ADMIN_URL = os.environ.get("CDS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_database() -> Iterator[str]:
    """Create a throw-away PostgreSQL database for one test and drop it afterwards."""
    import uuid

    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"cds_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI and is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on SQLite (a file) and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        yield from _postgres_database()


# --- a FHIR server that misbehaves on purpose (slow, failing, garbage) -----------------------


@dataclass
class HostileFhir:
    """Loopback server: /slow/<ms>/fhir/..., /status/<code>/fhir/..., /garbage/fhir/..., /html/fhir/...,
    /drip/<ms>/fhir/... (a byte every <ms>), /big/<bytes>/fhir/... (a padded answer)."""

    port: int
    hits: list[str]

    def base(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/fhir"


@pytest.fixture(scope="session")
def hostile_fhir() -> Iterator[HostileFhir]:
    import json as _json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            hits.append(self.path)
            parts = self.path.split("/")
            mode = parts[1] if len(parts) > 1 else ""
            if mode == "slow":
                time.sleep(int(parts[2]) / 1000)
                return self._send(200, _json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []}))
            if mode == "status":
                return self._send(int(parts[2]), _json.dumps({"resourceType": "OperationOutcome", "issue": []}))
            if mode == "garbage":
                return self._send(200, "{not json at all")
            if mode == "html":
                return self._send(200, "<html><body>Login</body></html>", "text/html")
            if mode == "drip":  # headers at once, then one byte every <ms> (a per-read timeout never trips)
                return self._drip(int(parts[2]) / 1000)
            if mode == "big":  # a valid resource padded to <bytes>, without Content-Length
                padding = " " * int(parts[2])
                return self._send(200, '{"resourceType": "QuestionnaireResponse", "id": "x"' + padding + "}")
            if mode == "notfhir":
                return self._send(200, _json.dumps({"hello": "world"}))
            return self._send(404, "{}")

        def _send(self, status: int, body: str, kind: str = "application/fhir+json") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.end_headers()
                self.wfile.write(body.encode())
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _drip(self, every: float) -> None:
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.end_headers()
                for byte in b'{"resourceType": "Bundle", "type": "searchset"' + b" " * 200 + b"}":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(every)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HostileFhir(server.server_port, hits)
    server.shutdown()
    server.server_close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the variant counts of the shape-invariance tests (tests/shapes.py), when they ran."""
    import sys

    module = sys.modules.get("tests.shapes")
    for line in getattr(module, "SUMMARY", ()):
        terminalreporter.write_line(line)
