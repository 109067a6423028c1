"""Cards, documentation questionnaires, the answer-and-sign-again loop, and decision pages, through HTTP."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from fhir.resources.R4B.servicerequest import ServiceRequest
from flask import Flask
from flask.testing import FlaskClient

from cds_server.pipeline.card_detail import md
from cds_server.pipeline.dtr_response import open_questions, required_unanswered
from cds_server.scenarios import SCENARIO_DIR, hook_request, load_scenario
from cds_server.web.app import create_app
from tests import conformance

NOW = datetime(2024, 3, 20, 15, 0, tzinfo=UTC)
SIGN = "/cds-services/crd-order-sign"
QBASE = "http://cds.payer.example/fhir/Questionnaire"
INTERNAL_ID = re.compile(r"\b(?!PA-)[A-Z]{2,5}-(I|NI|S|F|P|SoS)[0-9A-Za-z.-]*\b")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    return create_app(
        {
            "AUTH_REQUIRED": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'cards.sqlite'}",
            "CLOCK": lambda: NOW,
            "PAYER_NAME": "Acme Health",
            "PUBLIC_BASE_URL": "https://cds.acme.example",
        }
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def sign(client: FlaskClient, body: dict[str, Any], url: str = SIGN) -> dict[str, Any]:
    response = client.post(url, json=body)
    payload = response.get_json()
    assert response.status_code == 200, payload
    problems = conformance.check_response(body, payload)
    assert not problems, problems
    for card in payload["cards"]:
        assert not INTERNAL_ID.search(card["summary"]), f"internal id in summary: {card['summary']}"
        assert card["source"]["label"] == "Acme Health"
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if action["type"] in ("create", "update"):
                    ServiceRequest.model_validate(action["resource"])
    return payload


def scenario(name: str) -> dict[str, Any]:
    return hook_request(load_scenario(SCENARIO_DIR / f"{name}.json"))


def topics(payload: dict[str, Any]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in payload["cards"]]


def info_of(payload: dict[str, Any], index: int = 0) -> dict[str, Any]:
    ext = payload["systemActions"][index]["resource"]["extension"][-1]
    return {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}


# --- cards ------------------------------------------------------------------------


def test_met_order_gets_an_info_checklist_and_links_that_work(client: FlaskClient) -> None:
    payload = sign(client, scenario("mri/met-failed-conservative-care"))
    checklist, reference = payload["cards"]
    assert (checklist["indicator"], checklist["source"]["topic"]["code"]) == ("info", "guideline")
    assert "prior authorization PA-" in checklist["summary"]
    assert "✓ **Met:**" in checklist["detail"] and "MRI-I2" not in checklist["detail"], "ids stay on the page"
    assert "](https://cds.acme.example/determinations/" in checklist["detail"], "the card links its decision"
    assert "links" not in checklist and "suggestions" not in checklist, "Instructions: no links, no suggestions"
    urls = [link["url"] for link in reference["links"]]
    assert all(u.startswith("https://cds.acme.example/") for u in urls)
    guideline = client.get(urls[0].removeprefix("https://cds.acme.example"), headers={"Accept": "text/html"})
    assert guideline.status_code == 200 and 'id="mri"' in guideline.get_data(as_text=True)
    decision = client.get(urls[-1].removeprefix("https://cds.acme.example")).get_json()
    assert decision["outcome"] == "criteria-met" and decision["authorization"]["number"].startswith("PA-")


def test_unmet_order_gets_a_warning_with_override_reasons_and_alternatives(client: FlaskClient) -> None:
    body = scenario("ct-ctm/ctm-contrast-allergy-contraindicated")
    payload = sign(client, body)
    warning = payload["cards"][0]
    assert warning["indicator"] == "warning" and warning["source"]["topic"]["code"] == "contraindication"
    assert {r["code"] for r in warning["overrideReasons"]} >= {"clinical-judgment", "urgent"}
    assert all(r["display"] for r in warning["overrideReasons"])
    alternative = next(c for c in payload["cards"] if c["source"]["topic"]["code"] == "therapy-alternatives-opt")
    actions = alternative["suggestions"][0]["actions"]
    assert [a["type"] for a in actions] == ["delete", "create"]
    assert actions[1]["resource"]["code"]["coding"][0]["code"] == "72141", "MRI instead of CT"


def test_no_alternative_is_offered_that_this_record_would_refuse(tmp_path: Path) -> None:
    """CT not met for want of a qualifying reason: an MRI would be refused for the same reason, so none is offered."""
    on_its_date = create_app(
        {
            "AUTH_REQUIRED": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'dated.sqlite'}",
            "CLOCK": lambda: datetime(2024, 4, 15, 15, 0, tzinfo=UTC),  # the order's authoredOn
            "PAYER_NAME": "Acme Health",
            "PUBLIC_BASE_URL": "https://cds.acme.example",
        }
    ).test_client()
    payload = sign(on_its_date, scenario("ct-ctm/ct-plain-no-qualifying-reason-not-met"))
    warning = payload["cards"][0]
    assert warning["indicator"] == "warning" and warning["source"]["topic"]["code"] == "off-guideline"
    assert {r["code"] for r in warning["overrideReasons"]} >= {"clinical-judgment", "urgent"}
    offered = [c for c in payload["cards"] if c["source"]["topic"]["code"] == "therapy-alternatives-opt"]
    assert offered == []


def _find_request(service: str, outcome: str, **extra: str) -> dict[str, Any]:
    for path in sorted(SCENARIO_DIR.glob(f"{service}/*.json")):
        if path.name == "coverage-exemptions.json":
            continue
        data = json.loads(path.read_text())
        exp = data["expect"][0]
        if (
            len(data["orders"]) == 1
            and exp.get("service") == service
            and exp["outcome"] == outcome
            and all(c in json.dumps(data) for c in extra.values())
        ):
            return hook_request(load_scenario(path))
    pytest.fail(f"no scenario for {service}/{outcome}")


def test_summaries_keep_acronyms_in_capitals(client: FlaskClient) -> None:
    payload = sign(client, _find_request("ct-ctm", "not-met"))
    summary = payload["cards"][0]["summary"]
    assert "CT myelogram" in summary and "cT" not in summary, summary


def test_contraindication_card(client: FlaskClient) -> None:
    payload = sign(client, _find_request("mri", "contraindicated"))
    assert payload["cards"][0]["source"]["topic"]["code"] == "contraindication"
    assert payload["cards"][0]["indicator"] == "warning"
    assert "may not be appropriate" in payload["cards"][0]["summary"]


def test_missing_imaging_suggests_a_companion_mri(client: FlaskClient) -> None:
    payload = sign(client, scenario("esi/no-mri-documentation-needed"))
    companion = next(c for c in payload["cards"] if c["source"]["topic"]["code"] == "clinical-reminder")
    (action,) = companion["suggestions"][0]["actions"]
    assert action["type"] == "create" and action["resource"]["code"]["coding"][0]["code"] == "72141"


def test_inpatient_setting_suggests_the_same_order_outpatient(client: FlaskClient) -> None:
    body = _find_request("facet-initial", "not-met", site='"21"')
    payload = sign(client, body)
    card = next(c for c in payload["cards"] if c.get("suggestions") and "outpatient" in c["summary"])
    (action,) = card["suggestions"][0]["actions"]
    assert action["type"] == "update" and action["resource"]["locationCode"][0]["coding"][0]["code"] == "22"


def test_third_level_moves_to_a_separate_session(client: FlaskClient) -> None:
    payload = sign(client, scenario("facet-initial/third-level-in-another-order"))
    cards = [c for c in payload["cards"] if c.get("suggestions") and "two levels" in c["summary"]]
    assert len(cards) == 1, "one suggestion for the request, not one per order"
    card = cards[0]
    delete, create = card["suggestions"][0]["actions"]
    assert delete["type"] == "delete" and create["resource"]["code"]["coding"][0]["code"] in ("64492", "0215T")
    assert "extension" in card, "several orders: cards name the order they are about"


def test_configuration_switches_card_types_off_and_caps_cards(client: FlaskClient) -> None:
    body = scenario("ct-ctm/ct-plain-no-qualifying-reason-not-met")
    body["extension"] = {"davinci-crd.configuration": {"therapy-alternatives-opt": False, "guideline": False}}
    assert set(topics(sign(client, body))) <= {"off-guideline", "contraindication", "clinical-reminder"}
    body["extension"] = {"davinci-crd.configuration": {"max-cards": 1}}
    capped = sign(client, body)
    assert len(capped["cards"]) == 1 and capped["cards"][0]["indicator"] == "warning"


def test_discovery_offers_one_boolean_per_card_type(client: FlaskClient) -> None:
    service = client.get("/cds-services").get_json()["services"][0]
    options = {o["code"]: o for o in service["extension"]["davinci-crd.configuration-options"]}
    for code in ("guideline", "off-guideline", "contraindication", "therapy-alternatives-opt", "clinical-reminder"):
        assert options[code]["type"] == "boolean" and options[code]["default"] is True


def test_version_2_0_clients_get_the_legacy_topic_system(client: FlaskClient) -> None:
    body = scenario("mri/met-failed-conservative-care")
    body["extension"] = {"davinci-crd.requestedVersion": "2.0"}
    payload = sign(client, body)
    assert payload["cards"][0]["source"]["topic"]["system"] == "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"


def test_markdown_from_the_record_is_defused(client: FlaskClient) -> None:
    body = scenario("mri/met-failed-conservative-care")
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["code"]["text"] = "<script>alert(1)</script> **bold** [x](javascript:1)"
    detail = sign(client, body)["cards"][0]["detail"]
    assert "<script>" not in detail and "[x](javascript" not in detail
    assert md("<script>alert(1)</script> **bold** [x](javascript:1)") == (
        "&lt;script&gt;alert(1)&lt;/script&gt; \\*\\*bold\\*\\* \\[x\\](javascript:1)"
    )


# --- questionnaires --------------------------------------------------------------------


def test_every_service_questionnaire_is_valid_fhir_and_findable(client: FlaskClient) -> None:
    bundle = client.get("/fhir/Questionnaire").get_json()
    assert bundle["total"] == 9
    for entry in bundle["entry"]:
        questionnaire = entry["resource"]
        Questionnaire.model_validate(questionnaire)
        assert questionnaire["url"] == f"{QBASE}/{questionnaire['id']}" and questionnaire["version"] == "3.0.0"
        read = client.get(f"/fhir/Questionnaire/{questionnaire['id']}")
        assert read.mimetype == "application/fhir+json" and read.get_json() == questionnaire
    found = client.get(f"/fhir/Questionnaire?url={QBASE}/neck-pain-mri|3.0.0").get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["neck-pain-mri"]
    assert client.get(f"/fhir/Questionnaire?url={QBASE}/neck-pain-mri|9.9").get_json()["total"] == 0
    missing = client.get("/fhir/Questionnaire/nope")
    assert missing.status_code == 404 and conformance.check_outcome(missing.get_json()) == []


def test_questionnaire_items_have_enable_when_and_required_flags(client: FlaskClient) -> None:
    questionnaire = client.get("/fhir/Questionnaire/neck-pain-esi").get_json()
    items = {i["linkId"]: i for g in questionnaire["item"] for i in g["item"]}
    assert items["safety.anticoag-hold-plan"]["enableWhen"][0]["question"] == "safety.anticoag"
    assert items["esi.imaging-concordant"]["required"] is True
    assert items["hx.proc"]["repeats"] is True and {c["linkId"] for c in items["hx.proc"]["item"]} >= {
        "hx.proc.date",
        "hx.proc.relief-pct",
    }


# --- the loop ------------------------------------------------------------------------


def package(client: FlaskClient, order: dict[str, Any], coverage: dict[str, Any]) -> dict[str, Any]:
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "coverage", "resource": coverage}, {"name": "order", "resource": order}],
    }
    response = client.post("/fhir/Questionnaire/$questionnaire-package", json=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def answer_all(questionnaire: dict[str, Any], prefill: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
    """Complete the questionnaire the way a clinician would: keep the pre-filled answers, add the rest."""
    given = {i["linkId"]: i["answer"] for g in prefill.get("item", []) for i in g.get("item", [])}

    def value(link_id: str, kind: str) -> list[dict[str, Any]] | None:
        if link_id in answers:
            raw = answers[link_id]
            key = {"boolean": "valueBoolean", "integer": "valueInteger", "date": "valueDate"}.get(kind)
            return [{key: raw}] if key else [{"valueCoding": {"code": raw}}]
        return given.get(link_id)

    items = []
    for group in questionnaire["item"]:
        children = [
            {"linkId": i["linkId"], "answer": v}
            for i in group["item"]
            if (v := value(i["linkId"], i["type"])) is not None
        ]
        if children:
            items.append({"linkId": group["linkId"], "item": children})
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-loop",
        "status": "completed",
        "questionnaire": prefill["questionnaire"],
        "authored": "2024-03-20T14:00:00Z",
        "subject": prefill.get("subject"),
        "item": items,
    }


def test_the_whole_documentation_loop(client: FlaskClient, app: Flask) -> None:
    body = scenario("mri/conservative-care-exactly-42-days")
    first = sign(client, body)
    info = info_of(first)
    assert (info["pa-needed"], info["doc-needed"]) == ("auth-needed", "clinical")
    assert info["questionnaire"] == f"{QBASE}/neck-pain-mri|3.0.0"
    annotated = first["systemActions"][0]["resource"]

    bundle = package(client, annotated, body["prefetch"]["coverage"]["entry"][0]["resource"])
    (pkg,) = [p["resource"] for p in bundle["parameter"]]
    questionnaire, prefill = (e["resource"] for e in pkg["entry"])
    assert questionnaire["id"] == "neck-pain-mri"
    QuestionnaireResponse.model_validate(prefill)
    prefilled = {i["linkId"]: i["answer"][0] for g in prefill["item"] for i in g["item"]}
    assert prefilled["cc.pt.completed"]["valueBoolean"] is True
    assert prefilled["cc.pt.completed"]["extension"][0]["extension"][0]["valueCode"] == "auto"
    kept = app.extensions["cds"].store.assertion(info["coverage-assertion-id"])["decision"]["decision"]
    asked = required_unanswered(questionnaire, prefill)
    # 6.0 weeks on record is only a lower bound of care ("more than 6" is asked): weeks is asked, not pre-filled.
    assert sorted(asked) == sorted(open_questions(kept)) == ["cc.hep.start-date", "cc.weeks"], "only what is open"
    assert not set(asked) & set(prefilled)

    completed = answer_all(questionnaire, prefill, {"cc.weeks": 8, "mri.contraindication": "none"})
    QuestionnaireResponse.model_validate(completed)
    again = copy.deepcopy(body)
    order = again["context"]["draftOrders"]["entry"][0]["resource"]
    order["contained"] = [completed]
    order["supportingInfo"] = [{"reference": "#qr-loop"}]
    second = sign(client, again)
    info = info_of(second)
    assert info["pa-needed"] == "satisfied" and info["satisfied-pa-id"].startswith("PA-")
    decision = client.get(f"/determinations/{info['coverage-assertion-id']}").get_json()
    assert "QuestionnaireResponse/qr-loop#cc.weeks" in decision["answersUsed"]


def test_the_loop_never_asks_again_what_an_earlier_response_answered(client: FlaskClient) -> None:
    """Sign, answer part, sign, answer the rest, sign: each round asks only what is still open, and it ends."""
    body = scenario("mri/combination-missing-medication")
    coverage = body["prefetch"]["coverage"]["entry"][0]["resource"]
    given: dict[str, Any] = {}
    plan = [{f"rf.{k}": False for k in ("progressive-deficit", "gait-instability", "hoffmann")}, None]
    responses: list[dict[str, Any]] = []
    for round_number in range(4):
        again = copy.deepcopy(body)
        order = again["context"]["draftOrders"]["entry"][0]["resource"]
        order["contained"], order["supportingInfo"] = responses, [{"reference": f"#{r['id']}"} for r in responses]
        info = info_of(sign(client, again))
        if info.get("doc-needed") is None:
            break
        annotated = sign(client, again)["systemActions"][0]["resource"]
        (pkg,) = [p["resource"] for p in package(client, annotated, coverage)["parameter"]]
        questionnaire, prefill = (e["resource"] for e in pkg["entry"])
        asked = required_unanswered(questionnaire, prefill)
        assert asked and not set(asked) & set(given), f"round {round_number} asks again: {set(asked) & set(given)}"
        earlier = {i["linkId"] for g in prefill.get("item", []) for i in g["item"]}
        assert set(given) <= earlier, "an earlier answer is not pre-filled"
        answers = plan.pop(0) if plan and plan[0] is not None else None
        answers = answers or {q: _an_answer(q) for q in asked}
        given.update(answers)
        completed = answer_all(questionnaire, prefill, answers)
        completed["id"] = f"qr-{round_number}"
        completed["authored"] = f"2024-03-20T1{round_number}:00:00Z"
        responses.append(completed)
    else:
        raise AssertionError("the documentation loop did not converge")
    assert info["covered"] == "covered" and "doc-needed" not in info


def _an_answer(link_id: str) -> Any:
    return {"cc.meds.classes": "nsaid"}.get(link_id, "2024-01-02" if link_id.endswith("date") else True)


def test_answers_about_another_patient_are_ignored(client: FlaskClient) -> None:
    """A QuestionnaireResponse whose subject is someone else never completes this patient's request."""
    body = scenario("mri/conservative-care-exactly-42-days")
    first = sign(client, body)
    annotated = first["systemActions"][0]["resource"]
    bundle = package(client, annotated, body["prefetch"]["coverage"]["entry"][0]["resource"])
    questionnaire, prefill = (e["resource"] for e in bundle["parameter"][0]["resource"]["entry"])
    completed = answer_all(questionnaire, prefill, {"cc.weeks": 8, "mri.contraindication": "none"})
    completed["subject"] = {"reference": "Patient/someone-else"}
    again = copy.deepcopy(body)
    order = again["context"]["draftOrders"]["entry"][0]["resource"]
    order["contained"] = [completed]
    order["supportingInfo"] = [{"reference": "#qr-loop"}]
    info = info_of(sign(client, again))
    assert info["pa-needed"] == "auth-needed" and info["doc-needed"] == "clinical"


def test_an_answer_that_fails_a_criterion_is_named_on_the_card(client: FlaskClient) -> None:
    body = scenario("mri/conservative-care-exactly-42-days")
    qr = {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-fail",
        "status": "completed",
        "questionnaire": f"{QBASE}/neck-pain-mri|3.0.0",
        "authored": "2024-03-20",
        "item": [{"linkId": "cc.weeks", "answer": [{"valueInteger": 5}]}],
    }
    body["prefetch"]["questionnaireResponses"]["entry"].append({"resource": qr})
    payload = sign(client, body)
    detail = payload["cards"][0]["detail"]
    assert payload["cards"][0]["indicator"] == "warning"
    assert "answered 5 to “Total weeks of conservative care so far”" in detail
    assert "MRI-I2.weeks" not in detail


# --- decision pages ---------------------------------------------------------------------


def test_decision_page_in_json_and_html(client: FlaskClient) -> None:
    payload = sign(client, scenario("mri/met-failed-conservative-care"))
    assertion = info_of(payload)["coverage-assertion-id"]
    data = client.get(f"/determinations/{assertion}", headers={"Accept": "application/json"}).get_json()
    assert data["carePath"] == {"id": "neck-pain", "version": "3.0.0", "title": "Neck Pain"}
    assert data["service"]["id"] == "mri" and data["outcome"] == "criteria-met"
    assert datetime.fromisoformat(data["createdAt"]).utcoffset() is not None, "an instant, with its zone"
    weeks = next(n for n in _walk(data["criteria"]) if n["id"] == "MRI-I2.weeks")
    assert weeks["parameters"] == {"mriCareWeeks": 6} and weeks["evidence"]
    html = client.get(f"/determinations/{assertion}", headers={"Accept": "text/html"})
    assert html.mimetype == "text/html" and "MRI-I2.weeks" in html.get_data(as_text=True)
    assert client.get("/determinations/ca-none").status_code == 404


def _walk(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from _walk(node.get("children", []))


def test_guideline_page_has_an_anchor_per_service_and_criterion(client: FlaskClient, app: Flask) -> None:
    html = client.get("/carepaths/neck-pain", headers={"Accept": "text/html"}).get_data(as_text=True)
    carepath = app.extensions["cds"].carepaths[0]
    for service in carepath.services:
        assert f'id="{service.id}"' in html
    for rule in ("MRI-I2", "ESI-I5", "FI-NI3", "RFA-NI3", "CY-S1"):
        assert f'id="{rule}"' in html
    assert client.get("/carepaths/nope").status_code == 404
