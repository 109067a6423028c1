"""The load generators: wrk (Debian's, with ``bench/wrk_rotate.lua``) or, without it, Python threads.

Each drives one server for a bounded time with the given bodies (and one token per request when
authentication is on) and returns a ``Result``; ``drive`` runs the warm-up, then the measured run,
and charges the server's CPU over that run to the answers it gave.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import math
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load_payloads import Payload
from load_servers import BenchError, headers_for, process_group_cpu

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_rotate.lua"


@dataclass(frozen=True)
class Phase:
    """One run of load: its length and the tokens it may use (each once; empty with authentication off)."""

    seconds: int
    tokens: list[str]


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


def run_wrk(
    target: str, port: int, path: str, count: int, phase: Phase, workdir: Path, args: argparse.Namespace
) -> Result:
    """Drive one target with wrk for a bounded time and read the JSON line its ``done`` prints."""
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
        f"--script={WRK_SCRIPT}",
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
    return wrk_result(target, json.loads(line.removeprefix("WRK_RESULT ")))


def wrk_result(target: str, raw: dict[str, Any]) -> Result:
    """The figures of the JSON line the Lua script's ``done`` printed (microseconds) as a ``Result`` (ms)."""
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
    outcomes: list[Connection] = [Connection() for _ in range(args.connections)]
    tokens = iter(phase.tokens) if phase.tokens else None  # next() on a list iterator is atomic: one request each
    start = time.perf_counter()
    deadline = start + phase.seconds

    def loop(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=args.timeout)
        try:
            send_until(deadline, connection, path, bodies, number * 37, tokens, outcomes[number])
        finally:
            connection.close()

    workers = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(args.connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return python_result(target, outcomes, time.perf_counter() - start)


@dataclass
class Connection:
    """What one client thread saw: each answer's latency (seconds), non-2xx answers, socket errors."""

    latencies: list[float] = dataclasses.field(default_factory=list)
    errors: int = 0
    socket_errors: int = 0


def send_until(
    deadline: float,
    conn: http.client.HTTPConnection,
    path: str,
    bodies: Sequence[bytes],
    index: int,
    tokens: Iterator[str] | None,
    seen: Connection,
) -> None:
    """Post the bodies in turn from ``index`` on one connection until the deadline, a new token each."""
    while time.perf_counter() < deadline:
        body = bodies[index % len(bodies)]
        index += 1
        token = next(tokens, "exhausted") if tokens is not None else None
        sent = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers_for(token))
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            seen.socket_errors += 1
            conn.close()  # reconnects on the next request
            continue
        seen.latencies.append(time.perf_counter() - sent)
        if not 200 <= response.status < 300:
            seen.errors += 1


def python_result(target: str, outcomes: Sequence[Connection], elapsed: float) -> Result:
    """The threads' latencies pooled into one ``Result``."""
    times = sorted(t * 1000 for seen in outcomes for t in seen.latencies)
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
        errors=sum(seen.errors for seen in outcomes),
        socket_errors=sum(seen.socket_errors for seen in outcomes),
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
