"""What one call's decisions share never changes a decision.

An alternative a card proposes (the same order with another code) is decided
from what the order's own evaluation derived and decided
(``evaluate._reuse``): its facts, and every criterion that does not read the
order's code. These tests decide every scenario of the library, and the
benchmark's orders against its three record sizes, with and without that reuse,
and require the same decisions, alternatives included.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import bench_engine as bench
from cds_server.carepath_store import load_carepaths
from cds_server.engine import evaluate
from cds_server.engine.operators import REGISTRY
from cds_server.scenarios import iter_scenarios, run_scenario

CAREPATHS = load_carepaths()


def _decide_all() -> dict[str, list[dict[str, Any]]]:
    found = {sc.name: [d.to_dict() for d in run_scenario(sc, CAREPATHS)] for sc in iter_scenarios()}
    for size in (60, 600, 1800):
        raw = bench.sized_record(size)
        for name, code in bench.ORDERS.items():
            decisions = bench.decide_once(CAREPATHS, bench.order(code), raw)
            found[f"bench {size} {name}"] = [d.to_dict() for d in decisions]
    return found


def test_an_alternative_decided_from_its_orders_facts_gets_the_same_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = _decide_all()
    monkeypatch.setattr(evaluate, "_reuse", lambda seed, ctx: None)
    alone = _decide_all()
    assert shared.keys() == alone.keys()
    differ = [name for name in shared if shared[name] != alone[name]]
    assert not differ, f"decisions differ with and without reuse: {differ[:5]}"
    offered = sum(len(d["alternatives"]) for ds in shared.values() for d in ds)
    assert offered > 0  # the comparison covered alternatives that were actually weighed


def test_only_the_order_code_operators_are_decided_anew_for_an_alternative() -> None:
    # An operator that reads the order's code or text must say so, or an alternative would inherit its result.
    assert {name for name, op in REGISTRY.items() if op.reads_order_code} == {"order_code", "order_code_count"}
