"""DTR asks only what is missing: across the whole scenario library, in-process.

- the package's required, unanswered items are exactly ``open_questions`` (what the card counts);
- metamorphic: a fact decides the same whether the record states it or a response restates it,
  and answers decide the same whether given in one response or spread over an earlier and a later one;
- the adaptive form never asks what the record or an earlier response answers, always ends,
  and when it says the decision is settled, signing again with its answers gives that decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from functools import cache
from typing import Any

import pytest

from cds_server.carepath_store import load_carepaths
from cds_server.engine import CarePath, OrderDecision, Outcome
from cds_server.engine.model import Question
from cds_server.pipeline import adaptive
from cds_server.pipeline.dtr_response import open_questions, prefilled_response, required_unanswered
from cds_server.pipeline.questionnaires import all_questionnaires, answer_system, tailored
from cds_server.scenarios import Scenario, iter_scenarios, patient_id, run_scenario
from fhir_mappings.questionnaire import Answers


@cache
def carepaths() -> tuple[CarePath, ...]:
    return tuple(load_carepaths())


@cache
def questionnaires() -> dict[str, dict[str, Any]]:
    return all_questionnaires(carepaths())


def documentation_needed() -> Iterator[tuple[Scenario, OrderDecision]]:
    """Every order of the library that asks for documentation through a service's questionnaire."""
    for scenario in iter_scenarios():
        for decision in run_scenario(scenario, carepaths()):
            if decision.outcome is Outcome.DOCUMENTATION_NEEDED and decision.service_id:
                yield scenario, decision


CASES = list(documentation_needed())
IDS = [f"{s.name}:{d.order_ref}" for s, d in CASES]


def carepath_of(decision: OrderDecision) -> CarePath:
    return next(cp for cp in carepaths() if cp.id == decision.carepath_id)


def static_of(decision: OrderDecision) -> dict[str, Any]:
    return questionnaires()[f"{decision.carepath_id}-{decision.service_id}"]


def made_up(question: Question, as_of: date) -> dict[str, Any] | None:
    """A plausible answer of the item's type (a clinician's, not the record's); None for groups."""
    if question.type == "boolean":
        return {"valueBoolean": False}
    if question.type in ("choice", "open-choice"):
        codes = [o["code"] for o in question.options]
        return {"valueCoding": {"code": "none" if "none" in codes else codes[0]}}
    if question.type in ("integer", "decimal"):
        value = int(question.maximum) if question.maximum is not None else 12
        return {"valueInteger" if question.type == "integer" else "valueDecimal": value}
    if question.type == "date":
        return {"valueDate": (as_of - timedelta(weeks=14)).isoformat()}
    if question.type == "string":
        return {"valueString": "documented in the chart"}
    return None


def response(
    decision: OrderDecision, answers: Mapping[str, list[dict[str, Any]]], qr_id: str, authored: str
) -> dict[str, Any]:
    static = static_of(decision)
    return {
        "resourceType": "QuestionnaireResponse",
        "id": qr_id,
        "status": "completed",
        "questionnaire": f"{static['url']}|{static['version']}",
        "authored": authored,
        "item": [{"linkId": k, "answer": v} for k, v in answers.items()],
    }


def clinician_answers(decision: OrderDecision, link_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    carepath = carepath_of(decision)
    as_of = date.fromisoformat(decision.evaluation_date)
    out = {}
    for link_id in link_ids:
        answer = made_up(carepath.questions[link_id], as_of)
        if answer is not None:
            out[link_id] = [answer]
    return out


def decide_again(scenario: Scenario, decision: OrderDecision, *responses: dict[str, Any]) -> OrderDecision:
    subject = {"reference": f"Patient/{patient_id(scenario)}"}
    record = (*scenario.record, *({**r, "subject": subject} for r in responses))
    again = run_scenario(dataclasses.replace(scenario, record=record), carepaths())
    return next(d for d in again if d.order_ref == decision.order_ref)


@pytest.mark.parametrize(("scenario", "decision"), CASES, ids=IDS)
def test_required_unanswered_items_are_the_open_questions(scenario: Scenario, decision: OrderDecision) -> None:
    form = tailored(static_of(decision), decision.questions)
    prefilled = prefilled_response(form, decision.prefill, None, "2024-01-01", answer_system(carepath_of(decision)))
    assert sorted(required_unanswered(form, prefilled)) == sorted(open_questions(decision))
    assert sorted(open_questions(decision.to_dict())) == sorted(open_questions(decision))


def record_facts(decision: OrderDecision) -> dict[str, list[dict[str, Any]]]:
    """What the record answers for criteria it already decided, as a response would say it."""
    system = answer_system(carepath_of(decision))
    from cds_server.pipeline.dtr_response import answers_for

    return {
        link_id: [{k: v for k, v in a.items() if k != "extension"} for a in answers_for(entry, system)]
        for link_id, entry in decision.prefill.items()
        if link_id not in decision.questions and not entry["evidence"][0].startswith("QuestionnaireResponse/")
    }


@pytest.mark.parametrize(("scenario", "decision"), CASES, ids=IDS)
def test_a_fact_decides_the_same_from_the_record_or_restated_in_a_response(
    scenario: Scenario, decision: OrderDecision
) -> None:
    answers = clinician_answers(decision, open_questions(decision))
    plain = decide_again(scenario, decision, response(decision, answers, "qr-a", "2024-01-02T10:00:00Z"))
    restated = {**record_facts(decision), **answers}
    both = decide_again(scenario, decision, response(decision, restated, "qr-a", "2024-01-02T10:00:00Z"))
    # The outcome is the invariant. Some sub-criteria read a restated fact more precisely than the
    # record alone (an anticoagulant's status, a non-indication the incomplete record left unknown).
    assert both.outcome == plain.outcome
    assert set(both.conflicts) <= set(plain.conflicts), "the record's own facts, restated, conflict with it"


@pytest.mark.parametrize(("scenario", "decision"), CASES, ids=IDS)
def test_answers_decide_the_same_in_one_response_or_across_an_earlier_one(
    scenario: Scenario, decision: OrderDecision
) -> None:
    asked = open_questions(decision)
    answers = clinician_answers(decision, asked)
    first = {k: v for k, v in answers.items() if k in asked[: len(asked) // 2]}
    rest = {k: v for k, v in answers.items() if k not in first}
    one = decide_again(scenario, decision, response(decision, answers, "qr-all", "2024-01-02T10:00:00Z"))
    earlier = response(decision, first, "qr-early", "2024-01-01T10:00:00Z")
    later = response(decision, rest, "qr-late", "2024-01-02T10:00:00Z")
    two = decide_again(scenario, decision, earlier, later)
    assert (two.outcome, two.results_by_id()) == (one.outcome, one.results_by_id())
    half = decide_again(scenario, decision, earlier)
    assert not set(open_questions(half)) & set(first), "an item an earlier response answered is asked again"


UNREADABLE_ANSWERS = (
    [{"valueCoding": {"display": "No"}}],
    [{"valueBoolean": "false"}],
    ["no"],
    {"valueInteger": 3},
)


ANSWERABLE = [(s, d) for s, d in CASES if clinician_answers(d, open_questions(d))]  # an open item of a simple type


@pytest.mark.parametrize(("scenario", "decision"), ANSWERABLE, ids=[f"{s.name}:{d.order_ref}" for s, d in ANSWERABLE])
def test_an_unreadable_correction_is_not_understood_and_the_earlier_answer_does_not_count(
    scenario: Scenario, decision: OrderDecision
) -> None:
    """A later response whose answer to an item cannot be read may be a correction of the earlier one.

    So the earlier answer must not count, and the order never decides better than if nobody had
    answered the item: before, the earlier answer counted, and a corrected "yes" could issue a number.
    """
    asked = open_questions(decision)
    answers = clinician_answers(decision, asked)
    link_id = sorted(answers)[0]
    unreadable = UNREADABLE_ANSWERS[len(link_id) % len(UNREADABLE_ANSWERS)]
    earlier = response(decision, answers, "qr-early", "2024-01-01T10:00:00Z")
    correction = {
        **response(decision, {}, "qr-late", "2024-01-02T10:00:00Z"),
        "item": [{"linkId": link_id, "answer": unreadable}],
    }
    corrected = decide_again(scenario, decision, earlier, correction)
    cited = {e for root in corrected.criteria for node in root.walk() for e in node.evidence}
    assert f"QuestionnaireResponse/qr-early#{link_id}" not in cited, "the superseded answer still counts"
    without = {k: v for k, v in answers.items() if k != link_id}
    never = decide_again(scenario, decision, response(decision, without, "qr-early", "2024-01-01T10:00:00Z"))
    # Never better than if nobody had answered the item (where the answers left are enough, both approve).
    if corrected.outcome is Outcome.CRITERIA_MET or corrected.auto_approval:
        assert never.outcome is Outcome.CRITERIA_MET and never.auto_approval >= corrected.auto_approval


def run_adaptive(decision: OrderDecision) -> tuple[dict[str, Any], list[list[str]]]:
    """Play the adaptive form with a clinician who keeps pre-filled answers and answers the rest."""
    carepath, static = carepath_of(decision), static_of(decision)
    kept = decision.to_dict()
    definitions = adaptive.item_definitions(static)
    contained = adaptive.adaptive_questionnaire(static, "ca-test", "http://service.example/fhir")
    qr: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-adaptive",
        "contained": [contained],
        "questionnaire": f"#{contained['id']}",
        "status": "in-progress",
        "authored": "2024-01-02T10:00:00Z",
    }
    rounds: list[list[str]] = []
    for _ in range(len(definitions) + 1):
        qr = adaptive.step(qr, qr["contained"][0], kept, carepath, definitions, answer_system(carepath))
        if qr["status"] == "completed":
            return qr, rounds
        asked = [i["linkId"] for i in qr["contained"][0]["item"]][sum(map(len, rounds)) :]
        rounds.append(asked)
        have = {i["linkId"] for i in qr.get("item", [])}
        fresh = clinician_answers(decision, [q for q in asked if q not in have])
        qr["item"] = [*qr.get("item", []), *({"linkId": k, "answer": v} for k, v in fresh.items())]
    raise AssertionError(f"the adaptive form did not end after {len(rounds)} rounds")


@pytest.mark.parametrize(("scenario", "decision"), CASES, ids=IDS)
def test_the_adaptive_form_asks_only_what_is_missing_and_its_end_is_the_decision(
    scenario: Scenario, decision: OrderDecision
) -> None:
    final, rounds = run_adaptive(decision)
    shown = [q for r in rounds for q in r]
    asked = [q for q in shown if q not in decision.prefill]  # the rest is shown pre-filled, to confirm
    carepath = carepath_of(decision)
    depends = {c["question"] for q in decision.questions for c in carepath.questions[q].enable_when}
    assert set(asked) <= set(decision.questions) | depends, "asked an item no unknown criterion needs"
    assert not set(asked) & set(record_facts(decision)), "asked what the record already answers"
    assert len(shown) == len(set(shown))
    state = adaptive.assess(decision.to_dict(), carepath, Answers([final]))
    again = decide_again(scenario, decision, final)
    if state.settled:
        assert again.outcome.value == state.outcome, f"the form said {state.outcome}, signing gives {again.outcome}"
    assert again.outcome is not Outcome.DOCUMENTATION_NEEDED or set(again.questions) <= set(shown), (
        "signing again asks what the adaptive form never asked"
    )


@pytest.mark.parametrize(("scenario", "decision"), CASES, ids=IDS)
def test_the_prefilled_form_sent_back_untouched_never_approves(scenario: Scenario, decision: OrderDecision) -> None:
    """What the service pre-filled is not a clinician's answer to what is still open.

    Sending the pre-filled response back completed, with no answer added, must not settle an
    unknown criterion: before, a leaf the record settled ("imaging exists") filled an item an
    unknown leaf needed ("imaging shows impingement"), and the second sign issued a number.
    """
    form = tailored(static_of(decision), decision.questions)
    system = answer_system(carepath_of(decision))
    prefilled = prefilled_response(form, decision.prefill, None, "2024-01-01", system)
    untouched = {**prefilled, "id": "qr-untouched", "status": "completed", "authored": "2024-01-01T00:00:00Z"}
    again = decide_again(scenario, decision, untouched)
    assert not again.auto_approval, f"approved on the service's own pre-fill: {sorted(decision.prefill)}"
    assert again.outcome is not Outcome.CRITERIA_MET or not open_questions(decision)


@pytest.mark.parametrize(
    "date_answer",
    [{"valueString": "March"}, {"valueBoolean": True}, {"valueDate": "2024-03-01"}],
    ids=["date-as-text", "date-as-boolean", "readable-date"],
)
def test_a_prior_session_whose_date_cannot_be_read_still_blocks_an_initial_request(date_answer: dict) -> None:
    """A documented prior facet injection counts against "no facet injection in the past year".

    When its date cannot be read, the session cannot be placed in the window: before, the
    instance was dropped, no prior session was counted, and the initial request was approved.
    """
    scenario = next(s for s in iter_scenarios() if s.name == "facet-initial/conservative-care-85-days")
    decision = next(d for d in run_scenario(scenario, carepaths()) if d.service_id == "facet-initial")
    assert decision.auto_approval, "the scenario no longer approves: pick another"
    group = {
        "linkId": "hx.proc",
        "item": [
            {"linkId": "hx.proc.date", "answer": [date_answer]},
            {"linkId": "hx.proc.type", "answer": [{"valueCoding": {"code": "facet"}}]},
            {"linkId": "hx.proc.region", "answer": [{"valueCoding": {"code": "cervical"}}]},
        ],
    }
    history = {**response(decision, {}, "qr-hx", "2024-06-01T10:00:00Z"), "item": [group]}
    again = decide_again(scenario, decision, history)
    assert again.outcome is not Outcome.CRITERIA_MET and not again.auto_approval
