"""Benchmark: decide one order against records of about 60, 600 and 1,800 resources, in process.

Run with ``make bench``. Prints the median and p90 time of the whole in-process
decision (order validated with the FHIR models, record read and indexed with
the production terminology, CarePath evaluated) for each service's order code
and record size, and separately the record reading alone, so the targets can be
checked on this machine (0.5 ms at 60 resources, 10 ms at about 1,800, growth no
worse than linear). Results are recorded in docs/performance.md.

The records are in ``bench/engine_records.py`` (a hand-written 60-resource record)
and ``bench/engine_history.py`` (seeded generated history for the larger ones).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_history import AS_OF, CPT, ICD, PATIENT, cc  # noqa: E402
from bench.engine_records import record, sized_record  # noqa: E402
from cds_server.carepath_store import load_carepaths, terminology_for  # noqa: E402
from cds_server.engine import evaluate_orders  # noqa: E402
from fhir_mappings.orders import read_order, validate_order  # noqa: E402
from fhir_mappings.record import PatientRecord  # noqa: E402

SIZES = (60, 600, 1800)
ORDERS = {
    "physical-therapy": "97110",
    "mri": "72141",
    "ct-ctm": "72126",
    "spect-ct": "78830",
    "facet": "64490",
    "esi": "62321",
    "rfa": "64633",
    "cyst (64999)": "64999",
}

__all__ = ["AS_OF", "ORDERS", "PATIENT", "decide_once", "order", "read_record", "record", "sized_record"]


def order(code: str) -> dict[str, Any]:
    text = {"text": "cervical facet cyst aspiration"} if code == "64999" else {}
    return {
        "resourceType": "ServiceRequest",
        "id": "o",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p"},
        "authoredOn": "2024-03-15",
        "code": cc(CPT, code) | text,
        "reasonCode": [cc(ICD, "M54.2")],
        "encounter": {"reference": "Encounter/enc"},
    }


def read_record(carepaths: list[Any], raw_record: list[dict[str, Any]]) -> PatientRecord:
    """The record as production reads it: the patient's id and the terminology of the loaded CarePaths."""
    return PatientRecord(raw_record, PATIENT, terminology_for(carepaths))


def decide_once(carepaths: list[Any], raw_order: dict[str, Any], raw_record: list[dict[str, Any]]) -> Any:
    validate_order(raw_order)
    return evaluate_orders(carepaths, [read_order(raw_order)], read_record(carepaths, raw_record), AS_OF)


def _percentile(times: list[float], share: float) -> float:
    return times[max(0, int(len(times) * share) - 1)]


def _timed(call: Any, rounds: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


def _summary(times: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(times),
        "p90_ms": _percentile(times, 0.90),
        "p95_ms": _percentile(times, 0.95),
        "min_ms": times[0],
    }


def measure(
    carepaths: list[Any], code: str, raw_record: list[dict[str, Any]], rounds: int, warmup: int = 20
) -> dict[str, float]:
    """Time one whole decision (order validated and read, record read, CarePath evaluated)."""
    raw_order = order(code)
    return _summary(_timed(lambda: decide_once(carepaths, raw_order, raw_record), rounds, warmup))


def rounds_for(size: int, rounds: int) -> int:
    """``rounds`` at 60 resources, fewer for larger records (same total time, at least 50 or ``rounds``)."""
    return max(min(50, rounds), rounds * 60 // size)


def main() -> None:
    args = _arguments()
    carepaths = load_carepaths()
    if len(record()) != 60:
        raise SystemExit(f"the benchmark record should hold 60 resources, not {len(record())}")
    wanted = [s.strip() for s in args.services.split(",") if s.strip()]
    services = {n: c for n, c in ORDERS.items() if not wanted or n in wanted}
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = {size: run_size(carepaths, services, size, args.rounds, args.warmup) for size in sizes}
    if args.json:
        print(json.dumps({"python": platform.python_version(), "results": results}, indent=2))
    else:
        print_table(results)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500, help="rounds per service at 60 resources")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="record sizes, e.g. 60,600,1800")
    parser.add_argument("--services", default="", help="comma-separated subset of the services")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args()


def run_size(carepaths: list[Any], services: dict[str, str], size: int, rounds: int, warmup: int) -> dict[str, Any]:
    """Time the record read alone, then one whole decision per service, against a record of ``size`` resources."""
    raw_record, rounds = sized_record(size), rounds_for(size, rounds)
    reading = _summary(_timed(lambda: read_record(carepaths, raw_record), rounds, warmup))
    per_service = {name: measure(carepaths, code, raw_record, rounds, warmup) for name, code in services.items()}
    return {"resources": len(raw_record), "rounds": rounds, "record_read": reading, "services": per_service}


def print_table(results: dict[int, dict[str, Any]]) -> None:
    """The results as a table per record size, and each size's worst median against its target."""
    print(
        f"one order vs records of {', '.join(str(r['resources']) for r in results.values())} resources, "
        f"Python {platform.python_version()}"
    )
    for res in results.values():
        print(f"\n{res['resources']} resources, {res['rounds']} rounds per service")
        print(f"{'service':<18}{'median ms':>10}{'p90 ms':>10}{'p95 ms':>10}{'min ms':>10}")
        rows = {"(record read)": res["record_read"], **res["services"]}
        for name, r in rows.items():
            print(f"{name:<18}{r['median_ms']:>10.3f}{r['p90_ms']:>10.3f}{r['p95_ms']:>10.3f}{r['min_ms']:>10.3f}")
    for size, res in results.items():
        worst = max(r["median_ms"] for r in res["services"].values())
        target = 0.5 if size <= 60 else 10.0 if size <= 1800 else None
        verdict = (
            ""
            if target is None
            else f" (target: at most {target:g} ms) -> {'OK' if worst <= target else 'OVER TARGET'}"
        )
        print(f"worst median at {res['resources']} resources: {worst:.3f} ms{verdict}")


if __name__ == "__main__":
    main()
