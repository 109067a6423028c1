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

The work is split by meaning: ``load_payloads`` (the requests), ``signing`` (the tokens),
``load_servers`` (gunicorn for each target), ``load_generators`` (wrk or Python threads) and
``load_report`` (the table or JSON); this script reads the options and runs them in order.

Exit status: 0 when both targets answered only 2xx, 1 when any request failed,
2 when a server did not start or no scenario could be used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_generators import Phase, Result, drive  # noqa: E402
from load_payloads import Payload, build_payloads, write_bodies  # noqa: E402
from load_report import json_report, print_report, settings_of  # noqa: E402
from load_servers import SERVICE_PATH, BenchError, postgres_database, served, targets, verify  # noqa: E402
from signing import ALGORITHMS, BenchClient  # noqa: E402


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
    settings = settings_of(args)
    if args.json:
        print(json.dumps(json_report(settings, sizes, skipped, results), indent=2))
    else:
        print_report(args, settings, sizes, skipped, results)
    failed = [r.target for r in results if r.errors or r.socket_errors]
    if failed:
        print(f"requests failed during the run: {', '.join(failed)}", file=sys.stderr)
        if not args.no_auth:
            print("(if they are 401s, the run may have used up its tokens: raise --token-rate)", file=sys.stderr)
        return 1
    return 0


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
