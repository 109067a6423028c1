"""Load benchmark: order-sign calls over loopback to gunicorn, next to a plain Flask echo baseline.

Run with ``make bench-load``. ``bench/bench_engine.py`` times the decision in
process; this measures what a client sees: the production gunicorn settings
(``gunicorn.conf.py``, the app's own JSON request log, SQLite in WAL mode
recording every call, or PostgreSQL with ``--postgres``), client authentication
on as in production (every call carries its own ES384 JWT with a unique ``jti``,
signed before the run as an EHR would, so the service verifies and records each
one; ``--no-auth`` for demo mode), HTTP over loopback, and order-sign requests
built from the scenario library (every order type, with and without
documentation, prefetch complete so no FHIR server is called). The same
payloads then go to ``bench/echo_app.py``, a Flask app that only parses the
JSON body, served with the same settings, so the gap between the two rows is
the service's own cost and not HTTP, gunicorn or JSON parsing.

The load comes from Debian's ``wrk`` when it is installed (a Lua script rotates
through the bodies and prints the latency percentiles), else from a small
Python generator (threads, ``http.client``), which is slower and shares the
CPU with the servers, so its throughput is a lower bound. Every run is bounded
in time. Results are recorded in docs/performance.md.

Exit status: 0 when both targets answered only 2xx, 1 when any request failed,
2 when a server did not start or no scenario could be used.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from signing import ALGORITHMS, BenchClient  # noqa: E402

from cds_server.scenarios import EXEMPTIONS_NAME, SCENARIO_DIR, hook_request, load_scenario  # noqa: E402

SERVICE_PATH = "/cds-services/crd-order-sign"
ECHO_PATH = "/echo"
JSON_HEADERS = {"Content-Type": "application/json"}
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 40.0  # gunicorn's graceful_timeout (30 s) plus margin

# wrk runs this in each of its threads. ``setup`` numbers the threads so each
# starts at a different body; ``done`` prints one JSON line the script parses.
WRK_SCRIPT = r"""
local bodies, count, index = {}, 0, 0
local tokens, used, step = {}, 0, 1
local created = 0

function setup(thread)
  thread:set("thread_number", created)
  created = created + 1
end

function init(args)
  local dir = args[1]
  count = tonumber(args[2])
  for i = 1, count do
    local f = assert(io.open(string.format("%s/%04d.json", dir, i - 1), "rb"))
    bodies[i] = f:read("*a")
    f:close()
  end
  index = ((thread_number or 0) * 37) % count
  if args[3] and args[3] ~= "" then
    -- one token per request, never reused: thread n takes tokens n+1, n+1+threads, ...
    for line in io.lines(args[3]) do tokens[#tokens + 1] = line end
    used = thread_number or 0
    step = tonumber(args[4])
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  index = index % count + 1
  if #tokens > 0 then
    used = used + step
    local token = tokens[used] or "exhausted"
    local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
    return wrk.format(nil, nil, headers, bodies[index])
  end
  return wrk.format(nil, nil, nil, bodies[index])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f, "max_us": %d, "http_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Payload:
    """One request body and the scenario it came from."""

    name: str
    body: bytes


@dataclass(frozen=True)
class Phase:
    """One run of load: its length and the tokens it may use (each once; empty with authentication off)."""

    seconds: int
    tokens: list[str]


@dataclass(frozen=True)
class Target:
    """A server to measure: how gunicorn finds the app and how to tell it is up."""

    name: str
    app: str  # gunicorn's WSGI application argument
    pythonpath: Path
    path: str  # the endpoint the load goes to
    ready: Callable[[int], bool]
    env: dict[str, str]


@dataclass
class Result:
    """What one measured run gave; ``errors`` are answers outside 2xx."""

    target: str
    generator: str
    requests: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int
    socket_errors: int
    worker_cpu_ms_per_call: float | None = None  # CPU of gunicorn and its workers over the run, per answer


class BenchError(RuntimeError):
    """The benchmark could not run (a server did not start, no usable scenario)."""


# --- payloads -------------------------------------------------------------------------------


def scenario_paths(limit: int) -> list[Path]:
    """Return the scenario files; with a limit, taken in turn from each folder so every service stays in the mix."""
    paths = [p for p in sorted(SCENARIO_DIR.glob("*/**/*.json")) if p.name != EXEMPTIONS_NAME]
    if limit <= 0 or limit >= len(paths):
        return paths
    by_folder: dict[str, list[Path]] = {}
    for path in paths:
        by_folder.setdefault(path.relative_to(SCENARIO_DIR).parts[0], []).append(path)
    picked: list[Path] = []
    queues = list(by_folder.values())
    while len(picked) < limit:
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return sorted(picked)


def build_payloads(limit: int) -> list[Payload]:
    """Build one order-sign request per scenario, serialised once so the generators send fixed bytes."""
    payloads = []
    for path in scenario_paths(limit):
        scenario = load_scenario(path)
        body = json.dumps(hook_request(scenario), separators=(",", ":")).encode()
        payloads.append(Payload(scenario.name, body))
    return payloads


# --- servers --------------------------------------------------------------------------------


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


# --- load generators ------------------------------------------------------------------------


def write_bodies(payloads: Sequence[Payload], directory: Path) -> None:
    """Write the bodies as 0000.json, 0001.json ... for the wrk script to read."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, payload in enumerate(payloads):
        (directory / f"{number:04d}.json").write_bytes(payload.body)


def run_wrk(
    target: str, port: int, path: str, count: int, phase: Phase, workdir: Path, args: argparse.Namespace
) -> Result:
    """Drive one target with wrk for a bounded time and read the JSON line its ``done`` prints."""
    script = workdir / "rotate.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    threads = min(args.wrk_threads, args.connections)
    token_file = workdir / f"tokens-{uuid.uuid4().hex}.txt" if phase.tokens else None
    if token_file:
        token_file.write_text("\n".join(phase.tokens) + "\n", encoding="ascii")
    command = [
        "wrk",
        f"--threads={threads}",
        f"--connections={args.connections}",
        f"--duration={phase.seconds}s",
        f"--timeout={args.timeout}s",
        f"--script={script}",
        f"http://127.0.0.1:{port}{path}",
        "--",
        str(workdir / "bodies"),
        str(count),
        str(token_file or ""),
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=phase.seconds + args.timeout + 30)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    elapsed = raw["duration_us"] / 1e6
    return Result(
        target=target,
        generator="wrk",
        requests=raw["requests"],
        seconds=round(elapsed, 3),
        throughput_rps=round(raw["requests"] / elapsed, 1) if elapsed else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=round(raw["mean_us"] / 1000, 3),
        max_ms=raw["max_us"] / 1000,
        errors=raw["http_errors"],
        socket_errors=raw["socket_errors"],
    )


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def run_python(
    target: str, port: int, path: str, payloads: Sequence[Payload], phase: Phase, args: argparse.Namespace
) -> Result:
    """Drive one target from Python threads (one keep-alive connection each) for a bounded time.

    Only used without wrk: the generator holds the GIL while it works and
    competes with the servers for the same cores, so treat its throughput as
    a lower bound; the latencies are still those of individual requests.
    """
    bodies = [p.body for p in payloads]
    latencies: list[list[float]] = [[] for _ in range(args.connections)]
    failures = [[0, 0] for _ in range(args.connections)]  # [non-2xx, socket errors] per thread
    tokens = iter(phase.tokens)  # next() on a list iterator is atomic: each token goes to one request
    start = time.perf_counter()
    deadline = start + phase.seconds

    def loop(number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=args.timeout)
        index = number * 37
        try:
            while time.perf_counter() < deadline:
                body = bodies[index % len(bodies)]
                index += 1
                token = next(tokens, "exhausted") if phase.tokens else None
                sent = time.perf_counter()
                try:
                    conn.request("POST", path, body=body, headers=headers_for(token))
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    failures[number][1] += 1
                    conn.close()  # reconnects on the next request
                    continue
                latencies[number].append(time.perf_counter() - sent)
                if not 200 <= response.status < 300:
                    failures[number][0] += 1
        finally:
            conn.close()

    workers = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(args.connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    times = sorted(t * 1000 for per_thread in latencies for t in per_thread)
    return Result(
        target=target,
        generator="python",
        requests=len(times),
        seconds=round(elapsed, 3),
        throughput_rps=round(len(times) / elapsed, 1),
        p50_ms=round(percentile(times, 50), 3),
        p90_ms=round(percentile(times, 90), 3),
        p99_ms=round(percentile(times, 99), 3),
        mean_ms=round(sum(times) / len(times), 3) if times else 0.0,
        max_ms=round(times[-1], 3) if times else 0.0,
        errors=sum(f[0] for f in failures),
        socket_errors=sum(f[1] for f in failures),
    )


def drive(
    target: str,
    port: int,
    path: str,
    payloads: Sequence[Payload],
    workdir: Path,
    args: argparse.Namespace,
    phases: Sequence[Phase],
    pgid: int,
) -> Result:
    """Warm the workers up (imports, caches, the database file), then take the measured run.

    The last phase is the measured one; the CPU the server's processes used during it is divided
    by the answers it gave (a whole-process figure: it includes gunicorn, Flask and the log).
    """

    def once(phase: Phase) -> Result:
        if args.generator == "wrk":
            return run_wrk(target, port, path, len(payloads), phase, workdir, args)
        return run_python(target, port, path, payloads, phase, args)

    for phase in phases[:-1]:
        once(phase)
    before = process_group_cpu(pgid)
    result = once(phases[-1])
    spent = process_group_cpu(pgid) - before
    return dataclasses.replace(
        result, worker_cpu_ms_per_call=round(spent * 1000 / result.requests, 3) if result.requests else None
    )


# --- main -----------------------------------------------------------------------------------


def cpu_count() -> int:
    """Cores this process may use (what the servers and the generator share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def targets(workdir: Path, client: BenchClient | None, database_url: str | None) -> list[Target]:
    """The decision service as deployed (authentication on when a client is given), then the echo baseline."""
    service_env = client.settings() if client else {"CDS_AUTH_REQUIRED": "false"}
    service_env["CDS_DATABASE_URL"] = database_url or f"sqlite:///{workdir / 'bench.sqlite'}"
    return [
        Target("decision service", "wsgi:app", ROOT, SERVICE_PATH, service_ready, service_env),
        Target("echo baseline", "echo_app:app", ROOT / "bench", ECHO_PATH, echo_ready, {}),
    ]


def print_table(results: Sequence[Result]) -> None:
    """One row per target, then how the service compares with the baseline."""
    header = f"{'target':<18}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}"
    print(header + f"{'CPU ms/call':>13}")
    for r in results:
        errors = f"{r.errors}" + (f"+{r.socket_errors}s" if r.socket_errors else "")
        cpu = f"{r.worker_cpu_ms_per_call:.2f}" if r.worker_cpu_ms_per_call is not None else "-"
        print(
            f"{r.target:<18}{r.requests:>10}{r.throughput_rps:>10.1f}"
            f"{r.p50_ms:>9.2f}{r.p90_ms:>9.2f}{r.p99_ms:>9.2f}{errors:>8}{cpu:>13}"
        )
    if len(results) == 2 and results[1].throughput_rps and results[1].p50_ms:
        service, echo = results
        print(
            f"service vs echo: {service.throughput_rps / echo.throughput_rps:.2f}x the throughput, "
            f"+{service.p50_ms - echo.p50_ms:.2f} ms at p50, "
            f"+{service.p99_ms - echo.p99_ms:.2f} ms at p99"
        )
    if any(r.socket_errors for r in results):
        print("(+Ns: socket errors or timeouts on top of the non-2xx answers)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the options; pick wrk when it is installed, else the Python generator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load per target (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first (default 2)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent connections (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers per server (default 2)")
    parser.add_argument(
        "--wrk-threads", type=int, default=1, help="wrk threads (default 1: leave the cores to the servers)"
    )
    parser.add_argument(
        "--timeout", type=int, default=10, help="seconds before a request counts as failed (default 10)"
    )
    parser.add_argument(
        "--scenarios", type=int, default=0, help="scenarios to use, spread over services (default 0: all)"
    )
    parser.add_argument(
        "--generator", choices=("auto", "wrk", "python"), default="auto", help="default: wrk if installed"
    )
    parser.add_argument("--no-auth", action="store_true", help="authentication off (demo mode), no tokens")
    parser.add_argument("--alg", choices=ALGORITHMS, default="ES384", help="the tokens' algorithm (default ES384)")
    parser.add_argument("--token-rate", type=int, default=2500, help="tokens signed per second of load (default 2500)")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="record to a throw-away PostgreSQL database made through this URL "
        "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) instead of SQLite",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.workers, args.wrk_threads, args.timeout) < 1:
        parser.error("--duration, --connections, --workers, --wrk-threads and --timeout must be at least 1")
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "python"
    elif args.generator == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (Debian: apt-get install wrk), use --generator python")
    return args


def raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    """Turn SIGTERM into an exception so the ``finally`` blocks still stop the servers."""
    raise SystemExit(128 + signum)


def sign_phases(client: BenchClient | None, args: argparse.Namespace, verify_count: int) -> list[Phase]:
    """Tokens for every phase, signed before any load: the check of each payload, the warm-up, the measured run.

    Each request spends one token; a phase gets ``seconds x --token-rate`` of them, so a service
    faster than that rate would run out and get 401s (counted as errors, and said so).
    """
    if client is None:
        return [Phase(0, []), *(Phase(s, []) for s in (args.warmup, args.duration) if s > 0)]
    batches = [Phase(0, client.tokens(SERVICE_PATH, verify_count))]
    for seconds in (args.warmup, args.duration):
        if seconds > 0:
            batches.append(Phase(seconds, client.tokens(SERVICE_PATH, seconds * args.token_rate)))
    return batches


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


def measure(args: argparse.Namespace, say: Callable[[str], None]) -> tuple[list[Result], list[Payload], list[Any]]:
    """Serve and drive each target in turn; return the results, the payloads measured and those skipped."""
    client = None if args.no_auth else BenchClient.new(args.alg)
    payloads = build_payloads(args.scenarios)
    say("signing tokens ..." if client else "authentication off")
    phases = sign_phases(client, args, len(payloads))
    results: list[Result] = []
    skipped: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cds-bench-load-") as tmp, postgres_database(args.postgres) as db:
        workdir = Path(tmp)
        for target in targets(workdir, client, db):
            with served(target, args.workers, workdir) as (port, pgid):
                usable, dropped = verify(port, target.path, payloads, phases[0].tokens)
                if target.path == SERVICE_PATH:
                    # the service decides which scenarios are measured; the echo gets the same set
                    skipped, payloads = dropped, usable
                    if not payloads:
                        raise BenchError("no scenario answered 200: " + json.dumps(dropped[:3]))
                    write_bodies(payloads, workdir / "bodies")
                elif dropped:
                    raise BenchError(f"{target.name} refused payloads: " + json.dumps(dropped[:3]))
                say(f"{target.name}: {len(payloads)} payloads answer 200; {args.duration} s of load ...")
                results.append(drive(target.name, port, target.path, payloads, workdir, args, phases[1:], pgid))
    return results, payloads, skipped


def run(args: argparse.Namespace) -> int:
    """Measure both targets and print the results; return the exit status."""
    say: Callable[[str], None] = (lambda _msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    results, payloads, skipped = measure(args, say)
    sizes = [len(p.body) for p in payloads]
    settings = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "gunicorn_workers": args.workers,
        "worker_class": os.environ.get("WORKER_CLASS", "sync"),
        "threads": os.environ.get("THREADS"),
        "generator": args.generator,
        "wrk_threads": min(args.wrk_threads, args.connections) if args.generator == "wrk" else None,
        "authentication": not args.no_auth,
        "algorithm": None if args.no_auth else args.alg,
        "database": "postgresql" if args.postgres else "sqlite",
    }
    if args.json:
        report = {
            "date": date.today().isoformat(),
            "python": platform.python_version(),
            "cpus": cpu_count(),
            "machine": platform.platform(),
            "settings": settings,
            "payloads": {"used": len(payloads), "mean_bytes": round(sum(sizes) / len(sizes)), "skipped": skipped},
            "results": [asdict(r) for r in results],
        }
        print(json.dumps(report, indent=2))
    else:
        print_report(args, settings, sizes, skipped, results)
    failed = [r.target for r in results if r.errors or r.socket_errors]
    if failed:
        print(f"requests failed during the run: {', '.join(failed)}", file=sys.stderr)
        if not args.no_auth:
            print("(if they are 401s, the run may have used up its tokens: raise --token-rate)", file=sys.stderr)
        return 1
    return 0


def print_report(
    args: argparse.Namespace, settings: dict[str, Any], sizes: list[int], skipped: list[Any], results: list[Result]
) -> None:
    """The human-readable report: the run's settings, the payloads, the table."""
    auth = f"auth on ({args.alg}, pre-signed, unique jti)" if settings["authentication"] else "auth OFF"
    print(
        f"order-sign over loopback, {date.today().isoformat()}, Python {platform.python_version()}, "
        f"{cpu_count()} CPUs; gunicorn {args.workers} {settings['worker_class']} workers; {auth}; "
        f"{settings['database']}; {args.generator}, "
        f"{args.connections} connection{'s' if args.connections > 1 else ''}, {args.duration} s per target"
    )
    print(
        f"payloads: {len(sizes)} scenarios (mean {sum(sizes) / len(sizes) / 1024:.1f} KiB), "
        f"{len(skipped)} skipped" + (":" if skipped else "")
    )
    for item in skipped:
        print(f"  skipped {item['scenario']}: {item['status']} {item['reason']}")
    print_table(results)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the exit status says whether every request succeeded (see the module docstring)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench_load: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
