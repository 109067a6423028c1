"""Golden responses: one full order-sign answer for every outcome of every service, reviewed in diffs.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 make test`` (or
``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py``) and read
the diff. Generated ids (card and suggestion uuids, new order ids,
authorization numbers) are replaced by placeholders so only meaningful
changes show.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cds_server.scenarios import OUTCOMES, SCENARIO_DIR, hook_request, load_scenario
from cds_server.web.app import create_app
from tests import conformance

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2024, 3, 20, 15, 0, tzinfo=UTC)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PA = re.compile(r"PA-[0-9A-Z]{10}")


def cases() -> list[tuple[str, str, Path]]:
    """The first scenario with an order of each (service, outcome) pair (single-order scenarios first)."""
    chosen: dict[tuple[str, str], Path] = {}
    for path in sorted(SCENARIO_DIR.glob("*/*.json")):
        if path.name == "coverage-exemptions.json" or path.parent.name == "real-world":
            continue  # real-world/ proves the reader; the goldens show one answer per service and outcome
        data = json.loads(path.read_text())
        for exp in data["expect"]:
            if exp.get("service") and exp["outcome"] in OUTCOMES:
                key = (exp["service"], exp["outcome"])
                single = len(data["orders"]) == 1
                if key not in chosen or (single and len(json.loads(chosen[key].read_text())["orders"]) > 1):
                    chosen[key] = path
    return [(service, outcome, path) for (service, outcome), path in sorted(chosen.items())]


CASES = cases()


def normalise(payload: Any) -> Any:
    text = json.dumps(payload, indent=1, ensure_ascii=False, sort_keys=True)
    text = UUID.sub("<uuid>", text)
    return json.loads(PA.sub("PA-<number>", text))


def test_every_service_has_goldens_for_its_outcomes() -> None:
    services = {service for service, _, _ in CASES}
    assert len(services) == 9
    assert len(CASES) >= 40


@pytest.mark.parametrize(("service", "outcome", "path"), CASES, ids=[f"{s}-{o}" for s, o, _ in CASES])
def test_golden_response(service: str, outcome: str, path: Path, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    # The call happens on the scenario's own date: an order dated after the call would be decided as of
    # the call (product-decisions.md §5), which is not what the scenario describes.
    now = datetime.combine(scenario.evaluation_date, NOW.timetz())
    app = create_app(
        {
            "AUTH_REQUIRED": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'g.sqlite'}",
            "CLOCK": lambda: now,
            "PUBLIC_BASE_URL": "https://cds.payer.example",
        }
    )
    app.extensions["cds"].id_key = ""  # golden files pin the decisions, not this database's random id key
    body = hook_request(scenario, hook_instance="00000000-0000-4000-8000-000000000000")
    response = app.test_client().post("/cds-services/crd-order-sign", json=body)
    payload = response.get_json()
    assert response.status_code == 200, payload
    assert conformance.check_response(body, payload) == []
    got = {"scenario": str(path.relative_to(SCENARIO_DIR)), "response": normalise(payload)}
    target = GOLDEN / service / f"{outcome}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1" or not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(got, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{target} was missing in CI; generate goldens locally and commit them")
    assert got == json.loads(target.read_text()), f"{target} differs: review, then UPDATE_GOLDEN=1"
