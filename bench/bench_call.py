"""CPU per hook call, in process, with authentication on: the request path with and without the engine.

Every scenario of the library becomes an order-sign call with everything prefetched
(``hook_request``), sent through the real app (Flask test client, so no socket and no
gunicorn) with a bearer token signed before the run (ES384, unique ``jti``), and with
SQLite keeping every record. Each call is timed with the thread's CPU clock
(``time.thread_time``) and the wall clock. The engine (reading the record and evaluating
the CarePath: ``PatientRecord`` and ``evaluate_orders``, owned and benchmarked by
``bench/bench_engine.py``) is timed on its own inside the same calls, so the table shows
the whole call, the engine, and the rest: what the request path itself costs (checks,
authentication, FHIR models of the orders, coverage, cards, records, JSON).

``--profile FILE`` also writes a cProfile of the measured rounds (``python -m pstats FILE``).
Results are recorded in docs/performance.md (target: the request path ≤ 1.5 ms median).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from signing import ALGORITHMS, BASE_URL, BenchClient  # noqa: E402

from cds_server.scenarios import EXEMPTIONS_NAME, SCENARIO_DIR, hook_request, load_scenario  # noqa: E402

PATH = "/cds-services/crd-order-sign"
ENGINE_SITE = "cds_server.pipeline.decide"  # the pipeline module that calls the engine
ENGINE_CALLS = ("PatientRecord", "evaluate_orders")


def bodies() -> list[bytes]:
    """One order-sign body per scenario, serialised once."""
    paths = [p for p in sorted(SCENARIO_DIR.glob("*/**/*.json")) if p.name != EXEMPTIONS_NAME]
    return [json.dumps(hook_request(load_scenario(p)), separators=(",", ":")).encode() for p in paths]


@contextlib.contextmanager
def engine_timer() -> Iterator[list[float]]:
    """Time the engine's entry points where the pipeline calls them; yields the running total (seconds)."""
    import importlib

    site = importlib.import_module(ENGINE_SITE)
    spent = [0.0]
    originals = {name: getattr(site, name) for name in ENGINE_CALLS}

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.thread_time() - began

        return wrapper

    for name, fn in originals.items():
        setattr(site, name, timed(fn))
    try:
        yield spent
    finally:
        for name, fn in originals.items():
            setattr(site, name, fn)


def measure(rounds: int, warmup: int, profile: str | None, alg: str = "ES384") -> dict[str, Any]:
    """Run every body ``warmup + rounds`` times; return the per-call figures of the measured rounds."""
    from cds_server.web.app import create_app

    client = BenchClient.new(alg)
    payloads = bodies()
    with tempfile.TemporaryDirectory(prefix="cds-bench-call-") as tmp:
        app = create_app(
            {
                "AUTH_REQUIRED": True,
                "PUBLIC_BASE_URL": BASE_URL,
                "TRUSTED_CLIENTS": client.trusted_clients(),
                "DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.sqlite'}",
                "LOG_LEVEL": "WARNING",
            }
        )
        http = app.test_client()
        tokens = iter(client.tokens(PATH, len(payloads) * (rounds + warmup)))
        cpu, wall, engine, skipped = [], [], [], set()
        profiler = cProfile.Profile() if profile else None
        with engine_timer() as spent:
            for round_ in range(warmup + rounds):
                for number, body in enumerate(payloads):
                    headers = {"Authorization": f"Bearer {next(tokens)}", "Content-Type": "application/json"}
                    measured = round_ >= warmup
                    if profiler and measured:
                        profiler.enable()
                    spent[0], c0, w0 = 0.0, time.thread_time(), time.perf_counter()
                    response = http.post(PATH, data=body, headers=headers, base_url=BASE_URL)
                    c1, w1 = time.thread_time(), time.perf_counter()
                    if profiler and measured:
                        profiler.disable()
                    if response.status_code != 200:
                        skipped.add(number)
                    elif measured:
                        cpu.append((c1 - c0) * 1000)
                        wall.append((w1 - w0) * 1000)
                        engine.append(spent[0] * 1000)
        if profiler and profile:
            profiler.dump_stats(profile)
        app.extensions["cds"].store.close()
    rest = [c - e for c, e in zip(cpu, engine, strict=True)]
    return {
        "calls": len(cpu),
        "bodies": len(payloads),
        "skipped": len(skipped),
        "cpu_ms": summary(cpu),
        "wall_ms": summary(wall),
        "engine_ms": summary(engine),
        "request_path_ms": summary(rest),
    }


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "min": round(ordered[0], 3),
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[int(len(ordered) * 0.9)], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured passes over the library (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured passes first (default 1)")
    parser.add_argument("--profile", help="write a cProfile of the measured rounds to this file")
    parser.add_argument("--alg", choices=ALGORITHMS, default="ES384", help="the tokens' algorithm (default ES384)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = measure(args.rounds, args.warmup, args.profile, args.alg)
    if args.json:
        print(json.dumps({"python": platform.python_version(), **result}, indent=2))
        return 0 if result["calls"] else 1
    print(
        f"order-sign in process, auth on ({args.alg}), SQLite; {result['bodies']} scenarios x {args.rounds} rounds, "
        f"{result['calls']} calls measured, {result['skipped']} scenarios not answered 200"
    )
    print(f"{'per call (ms)':<28}{'min':>8}{'median':>8}{'p90':>8}{'mean':>8}")
    for label, key in (
        ("whole call, CPU", "cpu_ms"),
        ("whole call, wall", "wall_ms"),
        ("engine (record + CarePath)", "engine_ms"),
        ("request path (CPU - engine)", "request_path_ms"),
    ):
        row = result[key]
        print(f"{label:<28}{row['min']:>8.3f}{row['median']:>8.3f}{row['p90']:>8.3f}{row['mean']:>8.3f}")
    return 0 if result["calls"] else 1


if __name__ == "__main__":
    sys.exit(main())
