"""FHIR fallback latency: order-sign with no prefetch, the record read from a real FHIR server on loopback.

The EHR sends the order, its ``fhirServer`` and an access token, and nothing prefetched: the
service reads the Patient, the Coverage and every history search from the server (in parallel,
``FHIR_MAX_PARALLEL`` at a time, following next pages) before it decides. The server is the test
suite's (``tests/fhir_server``: Medplum's FHIR router on Node, in memory), loaded with the
60-resource record of ``bench/bench_engine.py`` (each resource given its patient reference so the
searches find it) and an active Coverage. Calls go through the real app in process (Flask test
client), authentication on (pre-signed ES384 tokens), SQLite records; each call's wall time is
timed, one call at a time. Results are recorded in docs/performance.md (target: p99 ≤ 100 ms).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_engine import PATIENT, order, record  # noqa: E402
from signing import BASE_URL, BenchClient  # noqa: E402

from cds_server.scenarios import coverage_for  # noqa: E402
from tests.conftest import FHIR_TOKEN, _start_fhir_server  # noqa: E402

PATH = "/cds-services/crd-order-sign"
PATIENT_ELEMENT = {"AllergyIntolerance": "patient", "Device": "patient", "Coverage": "beneficiary"}


def served_record() -> list[dict[str, Any]]:
    """The 60-resource record, each resource pointing at the patient as a FHIR server's search needs."""
    out = []
    for resource in record():
        kind = resource["resourceType"]
        if kind == "Coverage":
            continue
        if kind != "Patient":
            resource = {**resource, PATIENT_ELEMENT.get(kind, "subject"): {"reference": f"Patient/{PATIENT}"}}
        out.append(resource)
    return [*out, coverage_for(PATIENT, "cov-p")]


def body(server: str, code: str) -> dict[str, Any]:
    """An order-sign call with nothing prefetched."""
    return {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": server,
        "fhirAuthorization": {
            "access_token": FHIR_TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.read",
            "subject": "cds-service",
        },
        "context": {
            "userId": "Practitioner/example",
            "patientId": PATIENT,
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order(code)}]},
        },
    }


def server_floor(base: str, token: str, passes: int = 5) -> tuple[float, float]:
    """The server's own time for one call's reads, one after another (median of ``passes``), in ms:
    as a client waits for them (each GET through ``requests``, loopback and HTTP included) and as
    the server worked on them (the sum of their ``Server-Timing`` durations).

    The test server runs on one Node thread, so parallel reads are served one at a time:
    the second sum is the least any client could wait for them, however parallel its reads.
    """
    import requests

    from cds_server.pipeline.prefetch import TEMPLATES

    queries = [t.replace("{{context.patientId}}", PATIENT) for t in TEMPLATES.values() if "encounterId" not in t]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    totals, worked = [], []
    with requests.Session() as session:
        for _ in range(passes):
            began, work = time.perf_counter(), 0.0
            for query in queries:
                response = session.get(f"{base}/{query}", headers=headers, timeout=10)
                response.raise_for_status()
                work += float(response.headers.get("Server-Timing", "app;dur=0").rpartition("dur=")[2])
            totals.append((time.perf_counter() - began) * 1000)
            worked.append(work)
    return round(statistics.median(totals), 1), round(statistics.median(worked), 1)


def measure(calls: int, warmup: int, page_size: int, parallel: int, code: str) -> dict[str, Any]:
    """Start the FHIR server with the record, time the calls through the app, then the server alone."""
    from cds_server.web.app import create_app

    client = BenchClient.new()
    server = _start_fhir_server(page_size=page_size)
    try:
        resources = served_record()
        server.load(resources)
        with tempfile.TemporaryDirectory(prefix="cds-bench-fallback-") as tmp:
            app = create_app(client.app_settings(tmp, FHIR_MAX_PARALLEL=parallel))
            tokens = iter(client.tokens(PATH, calls + warmup))
            times, outcome, reads = time_calls(app.test_client(), server, tokens, calls, warmup, code)
            app.extensions["cds"].store.close()
        floor, work = server_floor(server.base, server.token)
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)
    setting = {"resources": len(resources), "fhir_reads_per_call": reads, "page_size": page_size, "parallel": parallel}
    return summary(times, (floor, work), setting, outcome)


def time_calls(
    http: Any, server: Any, tokens: Iterator[str], calls: int, warmup: int, code: str
) -> tuple[list[float], dict[str, Any] | None, int]:
    """Send ``warmup + calls`` order-sign calls one at a time; return the measured wall times (ms),
    the last call's coverage information and how many reads it made of the FHIR server."""
    times, outcome, reads = [], None, 0
    for number in range(warmup + calls):
        server.reset_log()
        headers = {"Authorization": f"Bearer {next(tokens)}"}
        began = time.perf_counter()
        response = http.post(PATH, json=body(server.base, code), headers=headers, base_url=BASE_URL)
        elapsed = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise SystemExit(f"call answered {response.status_code}: {response.get_data(as_text=True)[:300]}")
        if number >= warmup:
            times.append(elapsed)
            reads = len(server.requests_seen())
            ext = response.get_json()["systemActions"][0]["resource"]["extension"][-1]["extension"]
            outcome = {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in ext}
    return times, outcome, reads


def summary(
    times: list[float], floor: tuple[float, float], setting: dict[str, Any], outcome: dict[str, Any] | None
) -> dict[str, Any]:
    """The report: the server's floor, the setting, the percentiles of the calls, the decision."""
    ordered = sorted(times)
    return {
        "server_floor_ms": floor[0],
        "server_work_ms": floor[1],
        "resources": setting["resources"],
        "calls": len(times),
        **{k: setting[k] for k in ("fhir_reads_per_call", "page_size", "parallel")},
        "p50_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)], 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
        "min_ms": round(ordered[0], 2),
        "pa_needed": (outcome or {}).get("pa-needed"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="measured calls (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured calls first (default 10)")
    parser.add_argument("--page-size", type=int, default=50, help="the FHIR server's page size (default 50)")
    parser.add_argument("--parallel", type=int, default=6, help="FHIR_MAX_PARALLEL (default 6, the shipped value)")
    parser.add_argument("--code", default="72141", help="the order's CPT code (default 72141, cervical MRI)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a line")
    args = parser.parse_args(argv)
    result = measure(args.calls, args.warmup, args.page_size, args.parallel, args.code)
    if args.json:
        print(json.dumps({"python": platform.python_version(), **result}, indent=2))
    else:
        print(
            f"order-sign, no prefetch, {result['resources']} resources on the test FHIR server "
            f"(page size {result['page_size']}), FHIR_MAX_PARALLEL={result['parallel']}, auth on; "
            f"{result['calls']} calls, {result['fhir_reads_per_call']} FHIR reads per call, "
            f"pa-needed={result['pa_needed']}"
        )
        print(
            f"min {result['min_ms']} ms, p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, "
            f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms; the server alone, reads one after another: "
            f"{result['server_floor_ms']} ms ({result['server_work_ms']} ms of it the server's own work)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
