"""The load benchmark's report: a table for people, or JSON (``--json``) for scripts."""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date
from typing import Any

from load_generators import Result


def cpu_count() -> int:
    """Cores this process may use (what the servers and the generator share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings, as both reports state them."""
    return {
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


def json_report(
    settings: dict[str, Any], sizes: list[int], skipped: list[Any], results: Sequence[Result]
) -> dict[str, Any]:
    """The ``--json`` report: the machine, the settings, the payloads and one entry per target."""
    return {
        "date": date.today().isoformat(),
        "python": platform.python_version(),
        "cpus": cpu_count(),
        "machine": platform.platform(),
        "settings": settings,
        "payloads": {"used": len(sizes), "mean_bytes": round(sum(sizes) / len(sizes)), "skipped": skipped},
        "results": [asdict(r) for r in results],
    }
