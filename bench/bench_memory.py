"""Memory per worker under load: resident size of each gunicorn worker every 1,000 calls, up to 10,000.

The service runs as ``bench/bench_load.py`` runs it (``gunicorn.conf.py``, authentication on with
pre-signed ES384 tokens, SQLite records); order-sign calls built from the whole scenario library
are sent by a few client threads until ``--calls`` answers came back. After every ``--every``
answers the resident set size (VmRSS) of each worker is read from ``/proc``. A leak shows as
growth over the second half of the run, when caches have filled: the report gives each worker's
size at the half-way mark and at the end. Results are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_payloads import build_payloads  # noqa: E402
from load_servers import SERVICE_PATH, BenchError, post, served, targets  # noqa: E402
from signing import BenchClient  # noqa: E402


def workers_of(pgid: int) -> list[int]:
    """The gunicorn workers: the processes of the server's group other than the master."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != pgid:
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                found.append(int(entry.name))
    return sorted(found)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def drive(port: int, bodies: list[bytes], tokens: list[str], threads: int, on_answer: Any) -> int:
    """Send one call per token from ``threads`` threads; return how many were not answered 200."""
    lock = threading.Lock()
    queue = iter(enumerate(tokens))
    failures = [0]

    def loop() -> None:
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                return
            number, token = item
            status, _ = post(port, SERVICE_PATH, bodies[number % len(bodies)], token=token)
            with lock:
                failures[0] += status != 200
                on_answer()

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return failures[0]


def measure(calls: int, every: int, workers: int, threads: int) -> dict[str, Any]:
    client = BenchClient.new()
    bodies = [p.body for p in build_payloads(0)]
    tokens = client.tokens(SERVICE_PATH, calls)
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cds-bench-memory-") as tmp:
        service = targets(Path(tmp), client, None)[0]
        with served(service, workers, Path(tmp)) as (port, pgid):
            pids = workers_of(pgid)
            answered = [0]

            def on_answer() -> None:
                answered[0] += 1
                if answered[0] % every == 0:
                    samples.append({"calls": answered[0], "rss_mib": [rss_mib(pid) for pid in pids]})

            failures = drive(port, bodies, tokens, threads, on_answer)
            if workers_of(pgid) != pids:
                raise BenchError("a worker was replaced during the run: its memory is not comparable")
    half = next(s for s in samples if s["calls"] >= calls // 2)
    growth = [round(end - mid, 1) for end, mid in zip(samples[-1]["rss_mib"], half["rss_mib"], strict=True)]
    return {"calls": calls, "failures": failures, "workers": workers, "samples": samples, "growth_mib": growth}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls in all (default 10,000)")
    parser.add_argument("--every", type=int, default=1_000, help="calls between two samples (default 1,000)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = measure(args.calls, args.every, args.workers, args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"resident size per worker (MiB), {args.workers} workers, auth on, SQLite; {result['failures']} failures")
        for sample in result["samples"]:
            print(f"{sample['calls']:>8} calls  " + "  ".join(f"{v:7.1f}" for v in sample["rss_mib"]))
        print(f"growth over the second half (MiB): {result['growth_mib']}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
