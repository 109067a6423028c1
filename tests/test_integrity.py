"""Integrity of answers: whose record counts, which decision an assertion names, dates, ids, feedback."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_server.scenarios import SCENARIO_DIR, hook_request, load_scenario
from cds_server.web.app import create_app
from tests import conformance
from tests.test_service import SIGN, _order_sign, _sr, coverage_ext, ok, post

MET = "mri/met-failed-conservative-care"


class Clock:
    """A settable clock, so a test can let an authorization expire."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2024, 3, 20, 15, 0, tzinfo=UTC))


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> Iterator[Flask]:
    return create_app({"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'i.sqlite'}", "CLOCK": clock})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def met_request() -> dict[str, Any]:
    return hook_request(load_scenario(SCENARIO_DIR / f"{MET}.json"))


def info(payload: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return coverage_ext(payload["systemActions"][index]["resource"])


def ok_with(client: FlaskClient, body: dict[str, Any], url: str, order: dict[str, Any]) -> dict[str, Any]:
    """A conformant 200 whose actions may update ``order`` (read by reference, not in the context)."""
    status, payload = post(client, body, url)
    assert status == 200, payload
    problems = conformance.check_response(body, payload, {f"ServiceRequest/{order['id']}": order})
    assert not problems, problems
    return payload


def _reassign(resource: dict[str, Any], patient: str) -> None:
    for field in ("subject", "patient", "beneficiary"):
        if field in resource:
            resource[field] = {"reference": f"Patient/{patient}"}


# --- whose record counts -----------------------------------------------------------------


def test_another_patients_history_never_meets_a_criterion(client: FlaskClient) -> None:
    """An EHR that mixes patients in a search result must not get an approval from the wrong chart."""
    body = met_request()
    assert info(ok(client, body))["pa-needed"] == "satisfied"
    mixed = copy.deepcopy(body)
    for key, value in mixed["prefetch"].items():
        if key in ("patient", "coverage") or not isinstance(value, dict):
            continue
        for entry in value.get("entry", []):
            _reassign(entry["resource"], "someone-else")
    got = info(ok(client, mixed))
    assert got["pa-needed"] != "satisfied" and "satisfied-pa-id" not in got


# --- assertion ids and authorization numbers ----------------------------------------------------


def test_a_different_record_gives_a_different_assertion(client: FlaskClient) -> None:
    order = _sr("72141")
    bare = info(ok(client, _order_sign(order, [])))
    met = info(ok(client, met_request()))
    assert bare["coverage-assertion-id"] != met["coverage-assertion-id"]


def test_an_expired_authorization_is_renewed_with_a_new_number(client: FlaskClient, clock: Clock) -> None:
    first = info(ok(client, met_request()))
    assert first["expiry-date"] == "2024-09-16"
    clock.now = datetime(2024, 10, 1, 9, 0, tzinfo=UTC)
    later = info(ok(client, met_request()))  # the same order and record, signed after the number expired
    assert later["pa-needed"] == "satisfied"
    assert later["satisfied-pa-id"] != first["satisfied-pa-id"], "an expired number is never re-dated"
    assert later["expiry-date"] > "2024-10-01"


# --- coverage dates ----------------------------------------------------------------------


def test_coverage_that_ended_before_the_order_was_written_is_not_covered(client: FlaskClient) -> None:
    body = met_request()
    coverage = body["prefetch"]["coverage"]["entry"][0]["resource"]
    coverage["period"] = {"start": "2023-01-01", "end": "2024-03-01"}
    got = info(ok(client, body))
    assert got["covered"] == "not-covered"
    coverage["period"] = {"start": "2023-01-01", "end": "2024-12-31"}
    assert info(ok(client, body))["covered"] == "covered"


# --- order ids and references ------------------------------------------------------------


def test_two_draft_orders_with_one_id_are_refused(client: FlaskClient) -> None:
    body = _order_sign(_sr("72141"), [])
    entry = body["context"]["draftOrders"]["entry"][0]
    body["context"]["draftOrders"]["entry"].append({**copy.deepcopy(entry), "fullUrl": "urn:uuid:2"})
    status, payload = post(client, body)
    assert status == 422 and conformance.check_outcome(payload) == []
    assert "appears twice" in json.dumps(payload)


def test_order_dispatch_finds_the_order_in_the_prefetch(client: FlaskClient) -> None:
    body = met_request()
    order = body["context"]["draftOrders"]["entry"][0]["resource"] | {"status": "active"}
    body["hook"] = "order-dispatch"
    body["context"] = {
        "patientId": body["context"]["patientId"],
        "dispatchedOrders": [f"ServiceRequest/{order['id']}", f"ServiceRequest/{order['id']}"],
        "performer": "Organization/imaging-center",
    }
    body["prefetch"]["dispatched"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": order}]}
    payload = ok_with(client, body, "/cds-services/crd-order-dispatch", order)
    assert len(payload["systemActions"]) == 1, "an order listed twice is decided once"
    assert info(payload)["pa-needed"] == "satisfied"


def test_appointment_with_an_absolute_based_on_updates_the_service_request(client: FlaskClient) -> None:
    body = met_request()
    order = body["context"]["draftOrders"]["entry"][0]["resource"] | {"status": "active"}
    pid = body["context"]["patientId"]
    appointments = [
        {
            "resourceType": "Appointment",
            "id": f"appt-{n}",
            "status": "proposed",
            "basedOn": [{"reference": f"https://ehr.example/fhir/ServiceRequest/{order['id']}"}],
            "participant": [{"actor": {"reference": f"Patient/{pid}"}, "status": "needs-action"}],
        }
        for n in (1, 2)
    ]
    body["hook"] = "appointment-book"
    body["context"] = {
        "userId": "Practitioner/dr",
        "patientId": pid,
        "appointments": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": a} for a in appointments],
        },
    }
    body["prefetch"]["orders"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": order}]}
    payload = ok_with(client, body, "/cds-services/crd-appointment-book", order)
    (action,) = payload["systemActions"]
    assert action["resource"]["resourceType"] == "ServiceRequest" and action["resource"]["id"] == order["id"]


# --- cards ---------------------------------------------------------------------------------------


def test_many_unmet_orders_get_at_most_ten_cards_by_default(client: FlaskClient) -> None:
    orders = [_sr("72141", oid=f"sr{n}") for n in range(14)]
    body = _order_sign(orders[0], [])
    body["context"]["draftOrders"]["entry"] = [
        {"fullUrl": f"urn:uuid:{n}", "resource": o} for n, o in enumerate(orders)
    ]
    payload = ok(client, body)
    assert 0 < len(payload["cards"]) <= 10
    assert len(payload["systemActions"]) == 14, "every order still gets its coverage information"


# --- feedback ---------------------------------------------------------------------------------------


def _feedback(card: str, when: str = "2024-03-20T15:01:00Z") -> dict[str, Any]:
    return {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": when}]}


FEEDBACK = "/cds-services/crd-order-sign/feedback"


def test_feedback_for_an_issued_card_is_kept_once(client: FlaskClient, app: Flask) -> None:
    card = ok(client, met_request())["cards"][0]["uuid"]
    store = app.extensions["cds"].store
    first = client.post(FEEDBACK, json=_feedback(card))
    again = client.post(FEEDBACK, json=_feedback(card))
    assert first.status_code == again.status_code == 200
    assert (first.get_json()["new"], again.get_json()["new"]) == (1, 0)
    assert store.count("feedback") == 1


def test_feedback_for_a_card_never_issued_is_kept_flagged_and_an_impossible_time_refused(
    client: FlaskClient, app: Flask
) -> None:
    """Valid feedback gets 2xx (checklist 140) and is never lost; the answer says which cards were unknown."""
    import sqlalchemy as sa

    from cds_server.records.store import feedback

    card = ok(client, met_request())["cards"][0]["uuid"]
    stranger = "00000000-0000-4000-8000-000000000000"
    unknown = client.post(FEEDBACK, json=_feedback(stranger))
    assert unknown.status_code == 200 and unknown.get_json() == {"received": 1, "new": 1, "unknownCards": [stranger]}
    impossible = client.post(FEEDBACK, json=_feedback(card, "2024-02-30T10:00:00Z"))
    assert impossible.status_code == 400 and conformance.check_outcome(impossible.get_json()) == []
    other_service = client.post("/cds-services/crd-order-select/feedback", json=_feedback(card))
    assert other_service.get_json()["unknownCards"] == [card], "issued by order-sign, not order-select"
    mine = client.post(FEEDBACK, json=_feedback(card))
    assert "unknownCards" not in mine.get_json()
    store = app.extensions["cds"].store
    with store.engine.connect() as conn:
        rows = {(r.service_id, r.card): r.card_issued for r in conn.execute(sa.select(feedback))}
    assert rows == {
        ("crd-order-sign", stranger): False,
        ("crd-order-select", card): False,
        ("crd-order-sign", card): True,
    }


def test_request_at_sign_url_with_these_bodies_is_never_a_500(client: FlaskClient) -> None:
    """Bodies that once reached an unexpected error path."""
    base = _order_sign(_sr("72141"), [])
    bodies = [
        {**base, "prefetch": {**base["prefetch"], "coverage": {"resourceType": "Bundle", "entry": [None]}}},
        {**base, "prefetch": {**base["prefetch"], "patient": {"resourceType": "Patient"}}},
        {**base, "prefetch": {**base["prefetch"], "conditions": {"resourceType": "Bundle", "entry": "x"}}},
        {**base, "context": {**base["context"], "draftOrders": {"resourceType": "Bundle", "entry": [{}]}}},
    ]
    for body in bodies:
        status, payload = post(client, body, SIGN)
        assert status < 500, (body, payload)
        if status >= 400:
            assert conformance.check_outcome(payload) == []


# --- malformed requests the checklist names (rules 25, 30-32, 38, 142, 143) -------------------------------


def _select_body() -> dict[str, Any]:
    body = _order_sign(_sr("72141"), [])
    body["hook"] = "order-select"
    body["context"]["selections"] = ["ServiceRequest/sr1"]
    return body


def _dispatch_body() -> dict[str, Any]:
    body = _order_sign(_sr("72141"), [])
    body["hook"] = "order-dispatch"
    body["context"] = {"patientId": "p1", "dispatchedOrders": ["ServiceRequest/sr1"], "performer": "Organization/x"}
    return body


def _auth(**changes: Any) -> dict[str, Any]:
    auth = {"access_token": "t", "token_type": "Bearer", "expires_in": 30, "scope": "s", "subject": "c"}
    return {k: v for k, v in (auth | changes).items() if v is not None}


@pytest.mark.parametrize(
    ("url", "build", "mutate", "status"),
    [
        (
            SIGN,
            lambda: _order_sign(_sr("72141"), []),
            lambda b: b.update(fhirServer="https://ehr.example/fhir", fhirAuthorization=_auth(token_type="MAC")),
            400,
        ),
        (
            SIGN,
            lambda: _order_sign(_sr("72141"), []),
            lambda b: b.update(fhirServer="https://ehr.example/fhir", fhirAuthorization=_auth(expires_in="30")),
            400,
        ),
        (
            SIGN,
            lambda: _order_sign(_sr("72141"), []),
            lambda b: b.update(fhirServer="https://ehr.example/fhir", fhirAuthorization=_auth(subject=None)),
            400,
        ),
        (
            SIGN,
            lambda: _order_sign(_sr("72141"), []),
            lambda b: b["context"]["draftOrders"]["entry"][0]["resource"].update(resourceType="Procedure"),
            422,
        ),
        ("/cds-services/crd-order-select", _select_body, lambda b: b["context"].update(selections=[]), 400),
        (
            "/cds-services/crd-order-select",
            _select_body,
            lambda b: b["context"].update(selections=["ServiceRequest/none"]),
            422,
        ),
        ("/cds-services/crd-order-dispatch", _dispatch_body, lambda b: b["context"].pop("performer"), 400),
        (
            "/cds-services/crd-order-dispatch",
            _dispatch_body,
            lambda b: b["context"].update(dispatchedOrders=["sr1"]),
            400,
        ),
        (SIGN, lambda: _order_sign(_sr("72141"), []), lambda b: b.update(extension=["not", "an", "object"]), 400),
    ],
    ids=[
        "token-type",
        "expires-in",
        "no-subject",
        "procedure-order",
        "no-selections",
        "selection-elsewhere",
        "no-performer",
        "bare-id",
        "extension-array",
    ],
)
def test_checklist_violations_get_a_4xx_with_the_path(
    client: FlaskClient, url: str, build: Any, mutate: Any, status: int
) -> None:
    body = build()
    mutate(body)
    got, payload = post(client, body, url)
    assert got == status, payload
    assert conformance.check_outcome(payload) == [] and payload["issue"][0].get("expression")


@pytest.mark.parametrize(
    "item",
    [
        {"outcome": "accepted"},
        {"outcome": "accepted", "acceptedSuggestions": []},
        {"outcome": "overridden", "overrideReason": {}},
        {"outcome": "overridden", "overrideReason": {"reason": {"code": "x"}}},
        {"outcome": "ignored"},
        {"outcome": "overridden", "outcomeTimestamp": "2024-03-20T10:00:00+01:00"},
    ],
    ids=[
        "accepted-without-suggestions",
        "empty-suggestions",
        "empty-override",
        "reason-without-system",
        "bad-outcome",
        "not-utc",
    ],
)
def test_malformed_feedback_is_a_400(client: FlaskClient, app: Flask, item: dict[str, Any]) -> None:
    body = {"feedback": [{"card": "u", "outcomeTimestamp": "2024-03-20T10:00:00Z"} | item]}
    response = client.post(FEEDBACK, json=body)
    assert response.status_code == 400 and conformance.check_outcome(response.get_json()) == []
    assert app.extensions["cds"].store.count("feedback") == 0
