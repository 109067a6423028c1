"""$next-question over HTTP: the adaptive form end to end, and bad input answered 4xx with an OperationOutcome."""

# ruff: noqa: F811  (the imported app/client fixtures are what the tests take as arguments)

from __future__ import annotations

import copy
from typing import Any

import pytest
from flask.testing import FlaskClient

# The app and client fixtures are the loop tests' own (same clock, payer, database per test).
from tests.test_cards_and_loop import app, client, info_of, scenario, sign  # noqa: F401

NEXT = "/fhir/Questionnaire/$next-question"
QBASE = "http://cds.payer.example/fhir/Questionnaire"


def adaptive_form(client: FlaskClient, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sign the scenario's order and get its empty adaptive Questionnaire; return it and the request body."""
    body = scenario(name)
    first = sign(client, body)
    order = first["systemActions"][0]["resource"]
    canonical = info_of(first)["questionnaire"].replace("|", "-adaptive|")
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "coverage", "resource": body["prefetch"]["coverage"]["entry"][0]["resource"]},
            {"name": "order", "resource": order},
            {"name": "questionnaire", "valueCanonical": canonical},
        ],
    }
    response = client.post("/fhir/Questionnaire/$questionnaire-package", json=params)
    assert response.status_code == 200, response.get_json()
    (bundle,) = [p["resource"] for p in response.get_json()["parameter"]]
    (form,) = [e["resource"] for e in bundle["entry"]]
    assert not form.get("item") and form["derivedFrom"] == [info_of(first)["questionnaire"]]
    return form, body


def start(form: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-adaptive",
        "contained": [form],
        "questionnaire": f"#{form['id']}",
        "status": "in-progress",
        "authored": "2024-03-20T14:00:00Z",
    }


def ask(client: FlaskClient, qr: dict[str, Any]) -> dict[str, Any]:
    response = client.post(NEXT, json={"resourceType": "Parameters", "parameter": [_param(qr)]})
    assert response.status_code == 200, response.get_json()
    (out,) = response.get_json()["parameter"]
    assert out["name"] == "return"
    return out["resource"]


def _param(qr: Any) -> dict[str, Any]:
    return {"name": "questionnaire-response", "resource": qr}


def test_the_adaptive_form_asks_what_is_open_stops_when_settled_and_its_answers_decide(client: FlaskClient) -> None:
    form, body = adaptive_form(client, "mri/conservative-care-exactly-42-days")
    qr = ask(client, start(form))
    asked = [i["linkId"] for i in qr["contained"][0]["item"]]
    assert qr["status"] == "in-progress" and "cc.weeks" in asked
    answered = {i["linkId"]: i["answer"][0] for i in qr["item"]}
    blank = [q for q in asked if q not in answered]
    expected = {"cc.weeks", "cc.hep.prescribed", "cc.hep.start-date", "cc.meds.classes"}
    assert set(blank) == expected, "the rest is shown pre-filled"
    assert answered["cc.pt.completed"]["extension"][0]["extension"][0]["valueCode"] == "auto"
    # 6.0 weeks on record is only a lower bound of "more than 6 weeks": asked, never pre-filled as the answer.
    for item in qr["item"]:
        assert item["linkId"] != "cc.weeks", "a lower bound is not an answer"
    qr["item"].append({"linkId": "cc.weeks", "answer": [{"valueInteger": 8}]})
    qr = ask(client, qr)
    assert qr["status"] == "completed", "8 weeks settles it; nothing more is asked"
    weeks = next(i for i in qr["item"] if i["linkId"] == "cc.weeks")["answer"][0]
    assert weeks["extension"][0]["extension"][0]["valueCode"] == "manual"

    again = copy.deepcopy(body)
    order = again["context"]["draftOrders"]["entry"][0]["resource"]
    order["contained"], order["supportingInfo"] = [qr], [{"reference": "#qr-adaptive"}]
    info = info_of(sign(client, again))
    assert info["pa-needed"] == "satisfied", "the adaptive answers count as answers to the static Questionnaire"


def test_capability_statement_declares_next_question(client: FlaskClient) -> None:
    resource = client.get("/fhir/metadata").get_json()["rest"][0]["resource"][0]
    assert {"questionnaire-package", "next-question"} <= {o["name"] for o in resource["operation"]}


BAD: list[tuple[str, Any]] = [
    ("not json parameters", ["a list"]),
    ("no response", {"resourceType": "Parameters", "parameter": []}),
    ("two responses", {"resourceType": "Parameters", "parameter": [_param({}), _param({})]}),
    ("not a response", {"resourceType": "Parameters", "parameter": [_param({"resourceType": "Patient"})]}),
    ("no form", {"resourceType": "Parameters", "parameter": [_param({"resourceType": "QuestionnaireResponse"})]}),
]


@pytest.mark.parametrize(("why", "payload"), BAD, ids=[b[0] for b in BAD])
def test_malformed_requests_get_400_with_an_operation_outcome(client: FlaskClient, why: str, payload: Any) -> None:
    response = client.post(NEXT, json=payload)
    assert response.status_code == 400, why
    assert response.get_json()["resourceType"] == "OperationOutcome"


def _tampered(form: dict[str, Any], how: str) -> dict[str, Any]:
    qr = start(copy.deepcopy(form))
    if how == "unknown assertion":
        qr["contained"][0]["identifier"][0]["value"] = "ca-nobody"
    elif how == "no assertion":
        del qr["contained"][0]["identifier"]
    elif how == "foreign item":
        qr["contained"][0]["item"] = [{"linkId": "evil", "type": "string", "text": "?"}]
    elif how == "answer not asked":
        qr["item"] = [{"linkId": "cc.weeks", "answer": [{"valueInteger": 8}]}]
    elif how == "wrong type":
        qr["contained"][0]["item"] = [{"linkId": "cc.weeks", "type": "integer", "text": "weeks"}]
        qr["item"] = [{"linkId": "cc.weeks", "answer": [{"valueString": "eight"}]}]
    elif how == "item without linkId":
        qr["item"] = [{"answer": [{"valueInteger": 8}]}]
    elif how.startswith("item is "):  # found by review: each was a 500
        qr["item"] = {"item is 5": 5, "item is text": "x", "item is true": True, "item is an object": {}}[how]
    elif how == "answer is an object":
        qr["contained"][0]["item"] = [{"linkId": "cc.weeks", "type": "integer", "text": "weeks"}]
        qr["item"] = [{"linkId": "cc.weeks", "answer": {"valueInteger": 8}}]
    elif how == "long smuggled assertion":
        qr["contained"][0]["identifier"][0]["value"] = "<script>" + "A" * 300
    return qr


@pytest.mark.parametrize(
    ("how", "status"),
    [
        ("unknown assertion", 404),
        ("no assertion", 400),
        ("foreign item", 400),
        ("answer not asked", 400),
        ("wrong type", 400),
        ("item without linkId", 400),
        ("item is 5", 400),
        ("item is text", 400),
        ("item is true", 400),
        ("item is an object", 400),
        ("answer is an object", 400),
        ("long smuggled assertion", 404),
    ],
)
def test_a_form_this_service_did_not_make_is_refused(client: FlaskClient, how: str, status: int) -> None:
    form, _ = adaptive_form(client, "mri/conservative-care-exactly-42-days")
    response = client.post(NEXT, json={"resourceType": "Parameters", "parameter": [_param(_tampered(form, how))]})
    assert response.status_code == status, response.get_json()
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert "<script>" not in response.get_data(as_text=True), "an error never echoes what the caller sent"


@pytest.mark.parametrize(
    ("answer", "readable"),
    [
        ({"valueInteger": 8}, True),
        ({"valueQuantity": {"value": 8, "unit": "wk", "system": "http://unitsofmeasure.org", "code": "wk"}}, True),
        ({"valueQuantity": {"value": 8, "unit": "wk", "system": "http://unitsofmeasure.org", "code": "d"}}, False),
        ({"valueQuantity": {"value": 8, "comparator": "<", "unit": "wk"}}, False),
        ({"valueDecimal": 8.5}, False),
    ],
    ids=["integer", "quantity-in-weeks", "code-and-unit-disagree", "comparator", "fraction-for-an-integer"],
)
def test_the_form_takes_what_the_engine_reads_and_refuses_what_it_cannot(
    client: FlaskClient, answer: dict[str, Any], readable: bool
) -> None:
    """One rule for both: an answer the form took but the engine could not read left its criterion open
    while the form counted the item as asked, so the form ended and the next sign asked again."""
    form, _ = adaptive_form(client, "mri/conservative-care-exactly-42-days")
    qr = start(copy.deepcopy(form))
    qr["contained"][0]["item"] = [{"linkId": "cc.weeks", "type": "integer", "text": "weeks"}]
    qr["item"] = [{"linkId": "cc.weeks", "answer": [answer]}]
    response = client.post(NEXT, json={"resourceType": "Parameters", "parameter": [_param(qr)]})
    assert response.status_code == (200 if readable else 400), response.get_json()
    if not readable:
        assert "cc.weeks" in response.get_data(as_text=True)
