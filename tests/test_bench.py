"""The committed load benchmark still runs: one second against each target, with the Python generator.

Their figures are not asserted here (speed is checked by the benchmarks themselves and recorded in
docs/performance.md); what is asserted is that the scripts work and the service answers every call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_load_benchmark_runs_and_the_service_answers_every_call() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/bench_load.py",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--scenarios",
            "6",
            "--workers",
            "1",
            "--generator",
            "python",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    by_target = {r["target"]: r for r in report["results"]}
    assert set(by_target) == {"decision service", "echo baseline"}
    for row in by_target.values():
        assert row["requests"] > 0 and row["errors"] == 0 and row["p50_ms"] <= row["p99_ms"]


def test_the_engine_benchmark_runs_at_every_record_size() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/bench_engine.py",
            "--rounds",
            "3",
            "--warmup",
            "1",
            "--services",
            "mri,facet",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)["results"]
    assert [r["resources"] for r in report.values()] == [60, 600, 1800]
    for size in report.values():
        assert set(size["services"]) == {"mri", "facet"}
        for row in [size["record_read"], *size["services"].values()]:
            assert 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"]


def test_the_call_benchmark_times_every_stage_it_names() -> None:
    """Every stage ``--stages`` names is still where the pipeline calls it (a rename would time nothing)."""
    result = subprocess.run(
        [sys.executable, "bench/bench_call.py", "--rounds", "1", "--warmup", "0", "--stages", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["calls"] > 300 and report["skipped"] == 0
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_call import STAGES

    for stage in STAGES:
        assert report[f"{stage}_ms"]["median"] > 0, f"{stage} timed nothing: its function moved"
