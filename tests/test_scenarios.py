"""Run the whole scenario library: every synthetic patient must get its expected decision."""

from __future__ import annotations

import pytest

from cds_server.engine import CarePath
from cds_server.scenarios import Scenario, iter_scenarios, mismatches, run_scenario

SCENARIOS = list(iter_scenarios())


def test_library_is_not_empty() -> None:
    assert len(SCENARIOS) >= 50


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario, neck_pain: CarePath) -> None:
    decisions = run_scenario(scenario, [neck_pain])
    problems = mismatches(scenario, decisions)
    assert not problems, f"{scenario.description}\n" + "\n".join(problems)
