"""The scenario library covers every criterion in each of its states and every service outcome."""

from __future__ import annotations

from cds_server.engine import CarePath
from cds_server.scenarios import coverage_gaps, iter_scenarios, load_exemptions


def test_every_criterion_state_and_outcome_is_exercised(neck_pain: CarePath) -> None:
    gaps = coverage_gaps(neck_pain, list(iter_scenarios()))
    assert not gaps, "states no scenario asserts:\n" + "\n".join(gaps)


def test_exemptions_name_real_criteria_and_give_reasons(neck_pain: CarePath) -> None:
    services = {f"outcome:{s.id}" for s in neck_pain.services}
    for key, states in load_exemptions().items():
        assert key in neck_pain.nodes or key in services, f"exemption for unknown criterion {key}"
        for state, reason in states.items():
            assert state in ("met", "not-met", "unknown") or state in (
                "criteria-met",
                "not-met",
                "contraindicated",
                "documentation-needed",
                "not-applicable",
            )
            assert len(reason) > 20, f"{key}/{state}: say why this state cannot occur"
