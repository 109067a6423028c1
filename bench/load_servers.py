"""The servers the load benchmark measures: gunicorn with the production config, started and always stopped.

The decision service as deployed (``wsgi:app``, authentication on when the run signs tokens,
SQLite or a throw-away PostgreSQL database) and the echo baseline (``bench/echo_app.py``), each on
a free loopback port in its own process group, so stopping it reaches every worker; plus the
one-request client the readiness probes, the payload check and ``bench/bench_memory.py`` use, and
the CPU a server's processes spent.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load_payloads import Payload
from signing import BenchClient

ROOT = Path(__file__).resolve().parent.parent

SERVICE_PATH = "/cds-services/crd-order-sign"
ECHO_PATH = "/echo"
JSON_HEADERS = {"Content-Type": "application/json"}
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 40.0  # gunicorn's graceful_timeout (30 s) plus margin


@dataclass(frozen=True)
class Target:
    """A server to measure: how gunicorn finds the app and how to tell it is up."""

    name: str
    app: str  # gunicorn's WSGI application argument
    pythonpath: Path
    path: str  # the endpoint the load goes to
    ready: Callable[[int], bool]
    env: dict[str, str]


class BenchError(RuntimeError):
    """The benchmark could not run (a server did not start, no usable scenario)."""


def free_port() -> int:
    """Ask the kernel for a loopback port nobody uses (so parallel runs and `make serve` do not clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def headers_for(token: str | None) -> dict[str, str]:
    """The request headers: JSON, and the bearer token when authentication is on."""
    return JSON_HEADERS | {"Authorization": f"Bearer {token}"} if token else JSON_HEADERS


def post(port: int, path: str, body: bytes, timeout: float = 10.0, token: str | None = None) -> tuple[int, bytes]:
    """Send one POST and return the status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers_for(token))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def service_ready(port: int) -> bool:
    """The service is ready when /readyz says the database answers and CarePaths are loaded."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def echo_ready(port: int) -> bool:
    """The echo app has no probe of its own: it is ready when its one endpoint answers."""
    return post(port, ECHO_PATH, b"{}", timeout=2.0)[0] == 200


def log_tail(path: Path, lines: int = 20) -> str:
    """Return the end of a server log, for the error message when a server fails to start."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop gunicorn and its workers: SIGTERM to the whole process group, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def process_group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group (gunicorn and workers)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat: the process group
                total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


@contextlib.contextmanager
def served(target: Target, workers: int, workdir: Path) -> Iterator[tuple[int, int]]:
    """Run gunicorn with the production config for this target; yield its port and process group once it answers.

    gunicorn runs in its own session (process group) with the temporary
    directory as working directory, so stopping it reaches every worker and
    nothing it writes lands in the repository.
    """
    port = free_port()
    log_path = workdir / f"{target.name}.log"
    env = os.environ.copy()
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": str(workers),
            "PYTHONPATH": os.pathsep.join([str(target.pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"metrics-{target.name}"),
        }
    )
    env.update(target.env)
    command = [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"), target.app]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if proc.poll() is not None:
                raise BenchError(f"{target.name}: gunicorn exited with {proc.returncode}:\n{log_tail(log_path)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if target.ready(port):
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"{target.name}: not ready after {START_TIMEOUT_SECONDS:.0f} s:\n{log_tail(log_path)}")
            time.sleep(0.2)
        yield port, proc.pid
    finally:
        stop(proc)


def verify(
    port: int, path: str, payloads: Sequence[Payload], tokens: Sequence[str]
) -> tuple[list[Payload], list[dict[str, Any]]]:
    """Send every payload once; keep those answered 200, and say why the others were dropped.

    Measuring only calls that succeed keeps error answers (cheap, or slow) from
    skewing the figures; any error during the timed run then is a real failure.
    """
    kept, skipped = [], []
    for number, payload in enumerate(payloads):
        try:
            status, body = post(port, path, payload.body, token=tokens[number] if tokens else None)
        except (OSError, http.client.HTTPException) as exc:
            skipped.append({"scenario": payload.name, "status": None, "reason": repr(exc)})
            continue
        if status == 200:
            kept.append(payload)
        else:
            reason = body.decode("utf-8", errors="replace")[:200]
            skipped.append({"scenario": payload.name, "status": status, "reason": reason})
    return kept, skipped


def targets(workdir: Path, client: BenchClient | None, database_url: str | None) -> list[Target]:
    """The decision service as deployed (authentication on when a client is given), then the echo baseline."""
    service_env = client.settings() if client else {"CDS_AUTH_REQUIRED": "false"}
    service_env["CDS_DATABASE_URL"] = database_url or f"sqlite:///{workdir / 'bench.sqlite'}"
    return [
        Target("decision service", "wsgi:app", ROOT, SERVICE_PATH, service_ready, service_env),
        Target("echo baseline", "echo_app:app", ROOT / "bench", ECHO_PATH, echo_ready, {}),
    ]


@contextlib.contextmanager
def postgres_database(admin_url: str | None) -> Iterator[str | None]:
    """A throw-away PostgreSQL database for the run (dropped afterwards), or None for SQLite."""
    if not admin_url:
        yield None
        return
    import sqlalchemy as sa

    name = f"cds_bench_{os.getpid()}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
