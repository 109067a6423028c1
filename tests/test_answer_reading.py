"""DTR answers in the shapes that used to let an older "no" stand, or read two answers as one.

Each case takes an ESI order that answers alone would approve (every open item answered, the
systemic-infection question "no") and adds what a real response can carry: a correction with a
yes, two answers to one yes/no item, a repeated linkId, a time zone, a tie, an answer without a
value, an ``item`` sent as an object. None may approve; the control (a later plain yes) shows
the correction is seen at all. Found by an independent review (before the fix, 12 of 13 approved).
"""

from __future__ import annotations

from typing import Any

import pytest

from cds_server.engine import Outcome
from cds_server.pipeline.dtr_response import open_questions
from cds_server.scenarios import iter_scenarios, run_scenario
from fhir_mappings.questionnaire import Answers, ItemKind
from tests.test_dtr import CASES, carepaths, clinician_answers, decide_again, response

E, L = "2024-01-01T10:00:00Z", "2024-01-02T10:00:00Z"
LINK = "safety.infection-systemic"


def _esi_case():
    for scenario, decision in CASES:
        if decision.service_id != "esi":
            continue
        answers = clinician_answers(decision, open_questions(decision))
        if answers.get(LINK) == [{"valueBoolean": False}]:
            base = decide_again(scenario, decision, response(decision, answers, "qr-early", E))
            if base.outcome is Outcome.CRITERIA_MET and base.auto_approval:
                return scenario, decision, answers
    raise AssertionError("no ESI order that answers alone approve: the library changed, pick another case")


def _approves(d):
    return d.outcome is Outcome.CRITERIA_MET or bool(d.auto_approval)


def _late(decision, item, **over):
    return {**response(decision, {}, "qr-late", L), "item": [item], **over}


def test_control_a_later_yes_blocks():
    scenario, decision, answers = _esi_case()
    d = decide_again(
        scenario,
        decision,
        response(decision, answers, "qr-early", E),
        _late(decision, {"linkId": LINK, "answer": [{"valueBoolean": True}]}),
    )
    assert not _approves(d)


def test_conflicting_answers_to_one_non_repeating_item_do_not_approve():
    scenario, decision, answers = _esi_case()
    qr = response(decision, {**answers, LINK: [{"valueBoolean": False}, {"valueBoolean": True}]}, "qr-early", E)
    assert not _approves(decide_again(scenario, decision, qr))


def test_a_repeated_linkid_saying_yes_does_not_approve():
    scenario, decision, answers = _esi_case()
    qr = response(decision, answers, "qr-early", E)
    qr["item"].append({"linkId": LINK, "answer": [{"valueBoolean": True}]})
    assert not _approves(decide_again(scenario, decision, qr))


def test_an_unreadable_answer_authored_at_the_same_instant_does_not_approve():
    scenario, decision, answers = _esi_case()
    d = decide_again(
        scenario,
        decision,
        response(decision, answers, "qr-early", E),
        _late(decision, {"linkId": LINK, "answer": [{"valueBoolean": "yes"}]}, authored=E),
    )
    assert not _approves(d)


def test_a_correction_later_in_utc_but_written_with_another_offset_wins():
    scenario, decision, answers = _esi_case()
    d = decide_again(
        scenario,
        decision,
        response(decision, answers, "qr-early", "2024-01-02T03:00:00+00:00"),
        _late(decision, {"linkId": LINK, "answer": [{"valueBoolean": True}]}, authored="2024-01-02T00:30:00-05:00"),
    )
    assert not _approves(d)


@pytest.mark.parametrize(
    "answer",
    [
        [{"item": [{"linkId": "note", "answer": [{"valueString": "see chart"}]}]}],  # an answer with no value
        [],
        None,
    ],
)
def test_a_newer_answer_without_a_value_does_not_let_the_older_no_stand(answer):
    scenario, decision, answers = _esi_case()
    d = decide_again(
        scenario,
        decision,
        response(decision, answers, "qr-early", E),
        _late(decision, {"linkId": LINK, "answer": answer}),
    )
    assert not _approves(d)


def test_a_newer_response_whose_item_is_an_object_is_not_silence():
    scenario, decision, answers = _esi_case()
    late = {**response(decision, {}, "qr-late", L), "item": {"linkId": LINK, "answer": [{"valueBoolean": True}]}}
    assert not _approves(decide_again(scenario, decision, response(decision, answers, "qr-early", E), late))


def test_an_answer_with_two_value_x_is_not_read_as_the_first():
    scenario, decision, answers = _esi_case()
    d = decide_again(
        scenario,
        decision,
        response(decision, answers, "qr-early", E),
        _late(decision, {"linkId": LINK, "answer": [{"valueBoolean": False, "valueCoding": {"code": "Y"}}]}),
    )
    assert not _approves(d)


def test_a_quantity_with_a_comparator_is_not_read_as_its_value():
    kinds = {"cc.weeks": ItemKind("integer", unit="wk")}
    qr = {
        "resourceType": "QuestionnaireResponse",
        "id": "q",
        "authored": E,
        "item": [{"linkId": "cc.weeks", "answer": [{"valueQuantity": {"value": 12, "comparator": "<", "unit": "wk"}}]}],
    }
    found = Answers([qr], kinds)
    assert found.first("cc.weeks") is None and found.unreadable_source("cc.weeks")


def test_a_quantity_in_days_is_not_read_as_weeks():
    kinds = {"cc.weeks": ItemKind("integer", unit="wk")}
    qr = {
        "resourceType": "QuestionnaireResponse",
        "id": "q",
        "authored": E,
        "item": [
            {
                "linkId": "cc.weeks",
                "answer": [
                    {"valueQuantity": {"value": 12, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}}
                ],
            }
        ],
    }
    found = Answers([qr], kinds)
    assert found.first("cc.weeks") is None or found.first("cc.weeks").value != 12


def test_a_history_group_whose_item_is_an_object_does_not_erase_older_sessions():
    scenario = next(s for s in iter_scenarios() if s.name == "facet-initial/conservative-care-85-days")
    decision = next(d for d in run_scenario(scenario, carepaths()) if d.service_id == "facet-initial")
    group = {
        "linkId": "hx.proc",
        "item": [
            {"linkId": "hx.proc.date", "answer": [{"valueDate": "2024-03-01"}]},
            {"linkId": "hx.proc.type", "answer": [{"valueCoding": {"code": "facet"}}]},
            {"linkId": "hx.proc.region", "answer": [{"valueCoding": {"code": "cervical"}}]},
        ],
    }
    older = {**response(decision, {}, "qr-hx", "2024-06-01T10:00:00Z"), "item": [group]}
    assert not _approves(decide_again(scenario, decision, older)), "control: a documented prior session blocks"
    broken = {
        **response(decision, {}, "qr-hx2", "2024-06-02T10:00:00Z"),
        "item": [{"linkId": "hx.proc", "item": {"linkId": "hx.proc.date", "answer": [{"valueDate": "2024-03-01"}]}}],
    }
    assert not _approves(decide_again(scenario, decision, older, broken))


@pytest.mark.parametrize("authored", [None, "yesterday"], ids=["no-authored", "unreadable-authored"])
def test_a_correction_with_no_readable_authored_cannot_be_ordered_and_does_not_let_the_no_stand(authored: Any) -> None:
    scenario, decision, answers = _esi_case()
    late = _late(decision, {"linkId": LINK, "answer": [{"valueBoolean": True}]}, authored=authored)
    assert not _approves(decide_again(scenario, decision, response(decision, answers, "qr-early", E), late))


def _facet_initial() -> tuple[Any, Any]:
    scenario = next(s for s in iter_scenarios() if s.name == "facet-initial/conservative-care-85-days")
    decision = next(d for d in run_scenario(scenario, carepaths()) if d.service_id == "facet-initial")
    assert decision.auto_approval, "the scenario no longer approves: pick another"
    return scenario, decision


def test_an_unreadable_region_answer_leaves_the_same_region_history_unknown() -> None:
    """``svc.region`` is read by the CarePath's region fact, not asked by a criterion: it still counts.

    Unreadable, the order's region fell back to the CarePath's default, and the prior sessions
    "in this region" were counted against a region nobody named.
    """
    scenario, decision = _facet_initial()
    item = {"linkId": "svc.region", "answer": [{"valueCoding": {"code": "Thoracic"}}]}
    again = decide_again(scenario, decision, _late(decision, item))
    assert not _approves(again)
    assert any("could not be read" in n.reason for root in again.criteria for n in root.walk())


def test_an_unreadable_answer_naming_an_unlisted_procedure_is_not_replaced_by_the_order_text() -> None:
    """64999 is routed by the clinician's answer, else by the order's words; an unreadable answer is neither."""
    scenario = next(s for s in iter_scenarios() if s.name == "facet-cyst-aspiration/facet-cyst-text-routes-to-cyst")
    decision = next(d for d in run_scenario(scenario, carepaths()) if d.service_id == "facet-cyst-aspiration")
    assert decision.auto_approval, "the scenario no longer approves: pick another"
    item = {"linkId": "svc.unlisted-kind", "answer": [{"valueCoding": {"code": "Cyst"}}]}
    again = decide_again(scenario, decision, _late(decision, item))
    assert not _approves(again) and again.service_id is None


@pytest.mark.parametrize("status", ["Completed", "final", None], ids=["capitalised", "unknown", "missing"])
def test_a_correction_whose_status_is_not_understood_does_not_let_the_no_stand(status: Any) -> None:
    """A status the service does not know is not "ignore this response": it may be the correction."""
    scenario, decision, answers = _esi_case()
    late = _late(decision, {"linkId": LINK, "answer": [{"valueBoolean": True}]}, status=status)
    if status is None:
        del late["status"]
    assert not _approves(decide_again(scenario, decision, response(decision, answers, "qr-early", E), late))


def test_an_in_progress_response_is_still_not_evidence() -> None:
    """Known statuses keep their meaning: an unfinished form neither answers nor blocks."""
    scenario, decision, answers = _esi_case()
    late = _late(decision, {"linkId": LINK, "answer": [{"valueBoolean": True}]}, status="in-progress")
    assert _approves(decide_again(scenario, decision, response(decision, answers, "qr-early", E), late))


def test_a_coding_from_another_system_is_not_one_of_the_item_s_options() -> None:
    """The options are the CarePath's own codes: SNOMED's "none" is not the option "none"."""
    own = "http://cds.payer.example/fhir/CodeSystem/neck-pain-answers"
    kinds = {"mri.contraindication": ItemKind("choice", frozenset({"none", "pacemaker"}), system=own)}

    def qr(coding: dict[str, str]) -> dict[str, Any]:
        item = {"linkId": "mri.contraindication", "answer": [{"valueCoding": coding}]}
        return {"resourceType": "QuestionnaireResponse", "id": "q", "authored": E, "item": [item]}

    foreign = Answers([qr({"system": "http://snomed.info/sct", "code": "none"})], kinds)
    assert foreign.first("mri.contraindication") is None and foreign.unreadable_source("mri.contraindication")
    assert Answers([qr({"system": own, "code": "none"})], kinds).first("mri.contraindication").value == "none"
    assert Answers([qr({"code": "none"})], kinds).first("mri.contraindication").value == "none", "no system: the code"


def test_a_response_without_authored_is_ordered_by_its_last_update() -> None:
    """``authored`` is optional in R4: the server's ``meta.lastUpdated`` still says which response is later."""
    scenario, decision, answers = _esi_case()
    late = _late(decision, {"linkId": LINK, "answer": [{"valueBoolean": True}]}, meta={"lastUpdated": L})
    del late["authored"]
    assert not _approves(decide_again(scenario, decision, response(decision, answers, "qr-early", E), late))
    said_yes = {**answers, LINK: [{"valueBoolean": True}]}
    early_without = {**response(decision, said_yes, "qr-early", E), "meta": {"lastUpdated": E}}
    del early_without["authored"]
    correction = _late(decision, {"linkId": LINK, "answer": [{"valueBoolean": False}]})
    corrected = decide_again(scenario, decision, early_without, correction)
    assert corrected.outcome is Outcome.CRITERIA_MET, (
        "the later 'no' corrects the last-updated 'yes': ordered, not a tie"
    )


# A second review (of the rewrite above) found these; each approved before its fix.
DEVICE = {"linkId": "mri.contraindication", "answer": [{"valueCoding": {"code": "mr-unsafe-device"}}]}
NONE = {"linkId": "mri.contraindication", "answer": [{"valueCoding": {"code": "none"}}]}


def _mri() -> tuple[Any, Any]:
    scenario = next(s for s in iter_scenarios() if s.name == "mri/conservative-care-43-days")
    decision = next(d for d in run_scenario(scenario, carepaths()) if d.service_id == "mri")
    assert decision.auto_approval, "the scenario no longer approves: pick another"
    return scenario, decision


def _qr(decision: Any, qr_id: str, authored: str, items: list[Any]) -> dict[str, Any]:
    return {**response(decision, {}, qr_id, authored), "item": items}


@pytest.mark.parametrize(
    "responses",
    [
        [[{"linkId": "mri.contraindication", "item": []}, DEVICE]],  # an empty "group" beside the answer
        [[{"linkId": "s1", "item": [NONE]}, {"linkId": "s2", "item": [DEVICE]}]],  # one item in two sections
        [[NONE, {"linkId": "s2", "item": [DEVICE]}]],
    ],
    ids=["question-shaped-as-empty-group", "two-sections", "item-and-section"],
)
def test_one_response_that_says_two_things_of_an_item_is_not_read_as_the_first(responses: list[Any]) -> None:
    scenario, decision = _mri()
    again = decide_again(scenario, decision, *(_qr(decision, f"q{i}", L, r) for i, r in enumerate(responses)))
    assert not _approves(again)


@pytest.mark.parametrize(
    "newer",
    [
        [{"linkId": "comment", "answer": [{"valueString": "see below"}], "item": [DEVICE]}],  # qrs-1 broken
        [{"linkId": "comment", "answer": [{"valueStrin": "typo", "item": [DEVICE]}]}],  # under an unreadable answer
        [{"linkId": "mri.contraindication", "item": []}],  # shaped as a group, in an older response below
    ],
    ids=["under-answer-and-item", "under-unreadable-answer", "older-group-shape"],
)
def test_a_correction_below_something_unreadable_is_still_read(newer: list[Any]) -> None:
    scenario, decision = _mri()
    if newer[0].get("item") == []:  # the group-shaped item is the older one; the device the newer
        again = decide_again(scenario, decision, _qr(decision, "q0", E, newer), _qr(decision, "q1", L, [DEVICE]))
    else:
        again = decide_again(scenario, decision, _qr(decision, "q0", E, [NONE]), _qr(decision, "q1", L, newer))
    assert not _approves(again)


@pytest.mark.parametrize("authored", ["2024-01-02", "2024-01-02T18:00:00"], ids=["date-only", "no-offset"])
def test_a_same_day_correction_whose_time_is_not_exact_is_not_ordered_before_the_answer(authored: str) -> None:
    """A date, or a time with no offset, spans the whole day in every time zone: it cannot be placed before 10:00Z."""
    scenario, decision = _mri()
    first = _qr(decision, "q0", "2024-01-02T10:00:00Z", [NONE])
    assert not _approves(decide_again(scenario, decision, first, _qr(decision, "q1", authored, [DEVICE])))


def test_a_prior_session_in_a_second_section_still_counts() -> None:
    scenario, decision = _facet_initial()

    def proc(day: str, kind: str, region: str) -> dict[str, Any]:
        answers = {"hx.proc.date": {"valueDate": day}, "hx.proc.type": {"valueCoding": {"code": kind}}}
        answers["hx.proc.region"] = {"valueCoding": {"code": region}}
        return {"linkId": "hx.proc", "item": [{"linkId": k, "answer": [v]} for k, v in answers.items()]}

    sections = [{"linkId": "s1", "item": [proc("2015-01-01", "esi", "thoracic")]}]
    sections.append({"linkId": "s2", "item": [proc("2024-03-01", "facet", "cervical")]})
    assert not _approves(decide_again(scenario, decision, _qr(decision, "q-hx", "2024-06-01T10:00:00Z", sections)))


@pytest.mark.parametrize(
    ("item", "answer"),
    [
        ("cc.weeks", {"valueQuantity": {"value": 8, "unit": "wk", "system": "http://unitsofmeasure.org", "code": "d"}}),
        ("hx.onset-date", {"valueDate": "2024"}),  # a partial date would pick a day for the clinician
        ("hx.onset-date", {"valueDate": "2024-03-05garbage"}),
        ("cc.weeks", {"valueInteger": 10**400}),
        ("cc.weeks", {"valueDecimal": float("nan")}),
    ],
    ids=["code-and-unit-disagree", "partial-date", "date-and-garbage", "huge-integer", "nan"],
)
def test_values_that_cannot_be_read_exactly_are_unreadable(item: str, answer: dict[str, Any]) -> None:
    kinds = carepaths()[0].answer_kinds
    qr = {
        "resourceType": "QuestionnaireResponse",
        "id": "q",
        "authored": E,
        "item": [{"linkId": item, "answer": [answer]}],
    }
    found = Answers([qr], kinds)
    assert found.first(item) is None and found.unreadable_source(item) == "QuestionnaireResponse/q"


@pytest.mark.parametrize("authored", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_an_authored_at_the_edge_of_the_calendar_is_undated_not_a_crash(authored: str) -> None:
    qr = {"resourceType": "QuestionnaireResponse", "id": "q", "authored": authored, "item": [NONE]}
    assert Answers([qr], carepaths()[0].answer_kinds).first("mri.contraindication").value == "none"
