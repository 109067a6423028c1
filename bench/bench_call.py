"""CPU per hook call, in process, with authentication on: the request path apart from the engine and the cards.

Every scenario of the library becomes an order-sign call with everything prefetched
(``hook_request``), sent through the real app (Flask test client, so no socket and no
gunicorn) with a bearer token signed before the run (ES384, unique ``jti``), and with
SQLite keeping every record. Each call is timed with the thread's CPU clock
(``time.thread_time``) and the wall clock. Two parts are timed on their own inside the
same calls, where the pipeline calls them (``TIMED``): the engine (reading the record and
evaluating the CarePath: ``PatientRecord`` and ``evaluate_orders``, benchmarked by
``bench/bench_engine.py``) and the cards (the text of the answer, ``answer.answer``). The
rest is the request path itself: authentication, the checks, the FHIR models of the
orders, Coverage, coverage information, the records, JSON and the framework.

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
# Parts timed apart, each where the pipeline calls it: the engine (reading the record and deciding;
# bench/bench_engine.py) and the cards' text (cds_server/pipeline/cards.py and card_text.py).
TIMED = {
    "engine": ("cds_server.pipeline.decide", ("PatientRecord", "evaluate_orders")),
    "cards": ("cds_server.pipeline.keep", ("answer",)),
}
# With --stages, the request path's stages too, each timed where it is called and inclusive of
# what it calls (``decide`` holds the engine, ``answer_and_keep`` the cards): where the rest goes.
STAGES = {
    "auth (token, signature, jti)": ("cds_server.web.auth.Authenticator", ("check",)),
    "request checks": ("cds_server.pipeline.invoke", ("validate_request",)),
    "orders (scope, FHIR models)": ("cds_server.pipeline.invoke", ("find_orders",)),
    "record data and Coverage": ("cds_server.pipeline.invoke", ("gather", "check_coverage", "history_problem")),
    "decide (with the engine)": ("cds_server.pipeline.invoke", ("decide",)),
    "answer and keep (with cards)": ("cds_server.pipeline.invoke", ("answer_and_keep",)),
    "invocation row (audit copy)": ("cds_server.web.api", ("_invocation_row",)),
}


def bodies() -> list[bytes]:
    """One order-sign body per scenario, serialised once."""
    paths = [p for p in sorted(SCENARIO_DIR.glob("*/**/*.json")) if p.name != EXEMPTIONS_NAME]
    return [json.dumps(hook_request(load_scenario(p)), separators=(",", ":")).encode() for p in paths]


def _site(path: str) -> Any:
    """The module, or the class inside a module (``package.module.Class``), whose attribute is timed."""
    import importlib

    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)


@contextlib.contextmanager
def part_timers(parts: dict[str, tuple[str, tuple[str, ...]]]) -> Iterator[dict[str, list[float]]]:
    """Time each of ``parts`` where the pipeline calls it; yields its running total (CPU seconds)."""
    spent = {part: [0.0] for part in parts}
    originals = []

    def timed(fn: Callable[..., Any], total: list[float]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                total[0] += time.thread_time() - began

        return wrapper

    for part, (module, names) in parts.items():
        site = _site(module)
        for name in names:
            originals.append((site, name, getattr(site, name)))
            setattr(site, name, timed(getattr(site, name), spent[part]))
    try:
        yield spent
    finally:
        for site, name, fn in originals:
            setattr(site, name, fn)


def as_a_worker_collects(tmp: str) -> None:
    """Set the garbage collector as gunicorn.conf.py sets it in each worker once the app is loaded."""
    import importlib.util
    import os

    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tmp)  # loading the config would make one otherwise
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    assert spec is not None and spec.loader is not None
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    conf.post_worker_init(None)


def measure(
    rounds: int,
    warmup: int,
    profile: str | None,
    alg: str = "ES384",
    stages: bool = False,
    worker_gc: bool = True,
) -> dict[str, Any]:
    """Run every body ``warmup + rounds`` times; return the per-call figures of the measured rounds."""
    from cds_server.web.app import create_app

    client = BenchClient.new(alg)
    payloads = bodies()
    with tempfile.TemporaryDirectory(prefix="cds-bench-call-") as tmp:
        app = create_app(client.app_settings(tmp))
        if worker_gc:
            as_a_worker_collects(tmp)
        tokens = iter(client.tokens(PATH, len(payloads) * (rounds + warmup)))
        profiler = cProfile.Profile() if profile else None
        parts = TIMED | (STAGES if stages else {})
        figures, skipped = run(app.test_client(), payloads, tokens, warmup, rounds, profiler, parts)
        if profiler and profile:
            profiler.dump_stats(profile)
        app.extensions["cds"].store.close()
    own = [c - sum(figures[part][i] for part in TIMED) for i, c in enumerate(figures["cpu"])]
    result: dict[str, Any] = {"calls": len(own), "bodies": len(payloads), "skipped": len(skipped)}
    result |= {f"{key}_ms": summary(values) for key, values in figures.items()}
    return result | {"request_path_ms": summary(own)}


def run(
    http: Any,
    payloads: list[bytes],
    tokens: Iterator[str],
    warmup: int,
    rounds: int,
    profiler: Any,
    parts: dict[str, tuple[str, tuple[str, ...]]] = TIMED,
) -> tuple[dict[str, list[float]], set[int]]:
    """Send the payloads round after round; per measured call: CPU, wall, and the CPU of each timed part."""
    figures: dict[str, list[float]] = {"cpu": [], "wall": [], **{part: [] for part in parts}}
    skipped: set[int] = set()
    with part_timers(parts) as spent:
        for round_ in range(warmup + rounds):
            measured = round_ >= warmup
            for number, body in enumerate(payloads):
                headers = {"Authorization": f"Bearer {next(tokens)}", "Content-Type": "application/json"}
                if profiler and measured:
                    profiler.enable()
                for total in spent.values():
                    total[0] = 0.0
                c0, w0 = time.thread_time(), time.perf_counter()
                response = http.post(PATH, data=body, headers=headers, base_url=BASE_URL)
                c1, w1 = time.thread_time(), time.perf_counter()
                if profiler and measured:
                    profiler.disable()
                if response.status_code != 200:
                    skipped.add(number)
                elif measured:
                    figures["cpu"].append((c1 - c0) * 1000)
                    figures["wall"].append((w1 - w0) * 1000)
                    for part, total in spent.items():
                        figures[part].append(total[0] * 1000)
    return figures, skipped


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
    parser.add_argument("--stages", action="store_true", help="also time the request path's stages (inclusive)")
    parser.add_argument(
        "--python-gc", action="store_true", help="CPython's collector settings, not those of a gunicorn worker"
    )
    args = parser.parse_args(argv)
    result = measure(args.rounds, args.warmup, args.profile, args.alg, args.stages, not args.python_gc)
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
        ("cards (text of the answer)", "cards_ms"),
        ("request path (the rest)", "request_path_ms"),
    ):
        row = result[key]
        print(f"{label:<28}{row['min']:>8.3f}{row['median']:>8.3f}{row['p90']:>8.3f}{row['mean']:>8.3f}")
    for stage in STAGES if args.stages else ():
        row = result[f"{stage}_ms"]
        print(f"  {stage:<30}{row['min']:>8.3f}{row['median']:>8.3f}{row['p90']:>8.3f}{row['mean']:>8.3f}")
    return 0 if result["calls"] else 1


if __name__ == "__main__":
    sys.exit(main())
