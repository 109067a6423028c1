"""Whose order is decided: every order is for ``context.patientId``, and an Appointment's ServiceRequest is found.

An order for another patient decided with this patient's chart would issue a prior
authorization for the wrong person: refused with 422, naming where the order says so.
An appointment booked on a ServiceRequest is decided as that ServiceRequest, however the
``basedOn`` reference is written; one we cannot resolve is 412, a malformed one 400, and
the bare Appointment is never decided in its place.
"""

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

from cds_server.pipeline.fhir_client import FhirClient
from cds_server.scenarios import SCENARIO_DIR, hook_request, load_scenario
from cds_server.web.app import create_app
from tests import conformance
from tests.test_service import coverage_ext, post

MET = "mri/met-failed-conservative-care"
SIGN = "/cds-services/crd-order-sign"
SELECT = "/cds-services/crd-order-select"
DISPATCH = "/cds-services/crd-order-dispatch"
BOOK = "/cds-services/crd-appointment-book"
FHIR = "https://ehr.example/fhir"
NOW = datetime(2024, 3, 20, 15, 0, tzinfo=UTC)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        {"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}", "CLOCK": lambda: NOW}
    )
    yield app
    app.extensions["cds"].store.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def server_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand in for the EHR's FHIR server: ``FhirClient.read`` answers from this dict and logs each path."""
    resources: dict[str, Any] = {"_asked": []}

    def read(self: FhirClient, path: str) -> Any:
        resources["_asked"].append(self.base_url + path)
        return copy.deepcopy(resources.get(path))

    monkeypatch.setattr(FhirClient, "read", read)
    return resources


def met_request() -> dict[str, Any]:
    return hook_request(load_scenario(SCENARIO_DIR / f"{MET}.json"))


def met_order(body: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(body["context"]["draftOrders"]["entry"][0]["resource"]) | {"status": "active"}


def refused(app: Flask, client: FlaskClient, body: dict[str, Any], url: str, status: int, where: str) -> str:
    """Assert an OperationOutcome with ``status`` naming ``where``, and that nothing was decided; return its text."""
    got, payload = post(client, body, url)
    assert got == status, payload
    assert conformance.check_outcome(payload) == []
    assert [where] in [issue.get("expression") for issue in payload["issue"]], payload
    text = json.dumps(payload)
    assert "PA-" not in text and "satisfied-pa-id" not in text
    store = app.extensions["cds"].store
    assert store.count("authorizations") == 0 and store.count("assertions") == 0
    return text


def decided(client: FlaskClient, body: dict[str, Any], url: str, view: dict[str, Any], extra: dict[str, Any]) -> Any:
    """A 200 that passes the conformance checks (``view``: the request as the checker should read it)."""
    status, payload = post(client, body, url)
    assert status == 200, payload
    problems = conformance.check_response(view, payload, extra)
    assert not problems, problems
    return payload


def dispatch(body: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    body["hook"] = "order-dispatch"
    body["context"] = {
        "patientId": body["context"]["patientId"],
        "dispatchedOrders": [f"ServiceRequest/{order['id']}"],
        "performer": "Organization/imaging-center",
    }
    return body


def book(body: dict[str, Any], *appointments: dict[str, Any]) -> dict[str, Any]:
    body["hook"] = "appointment-book"
    body["context"] = {
        "userId": "Practitioner/dr",
        "patientId": body["context"]["patientId"],
        "appointments": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": a} for a in appointments],
        },
    }
    return body


def appointment(pid: str, based_on: Any = None, **more: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": "appt-1",
        "status": "proposed",
        "participant": [{"actor": {"reference": f"Patient/{pid}"}, "status": "needs-action"}],
        **more,
    }
    if based_on is not None:
        resource["basedOn"] = based_on
    return resource


def prefetch_orders(body: dict[str, Any], *orders: dict[str, Any]) -> None:
    body["prefetch"]["orders"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": o} for o in orders],
    }


# --- defect 1: an order for another patient ---------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Patient/someone-else",
        "https://ehr.example/fhir/Patient/someone-else",
        "Patient/someone-else/_history/2",
        "Group/the-whole-ward",
    ],
)
def test_a_draft_order_for_someone_else_is_refused(app: Flask, client: FlaskClient, subject: str) -> None:
    body = met_request()
    body["context"]["draftOrders"]["entry"][0]["resource"]["subject"] = {"reference": subject}
    text = refused(app, client, body, SIGN, 422, "$.context.draftOrders.entry[0].resource.subject")
    assert "someone-else" not in text, "the other patient's reference is not repeated"


@pytest.mark.parametrize("form", ["https://ehr.example/fhir/Patient/{pid}", "Patient/{pid}/_history/7"])
def test_an_absolute_or_versioned_reference_to_the_patient_is_the_patient(client: FlaskClient, form: str) -> None:
    body = met_request()
    pid = body["context"]["patientId"]
    body["context"]["draftOrders"]["entry"][0]["resource"]["subject"] = {"reference": form.format(pid=pid)}
    payload = decided(client, body, SIGN, body, {})
    assert coverage_ext(payload["systemActions"][0]["resource"])["pa-needed"] == "satisfied"


def test_order_select_refuses_another_patients_draft_order(app: Flask, client: FlaskClient) -> None:
    body = hook_request(load_scenario(SCENARIO_DIR / f"{MET}.json"), hook="order-select")
    body["context"]["draftOrders"]["entry"][0]["resource"]["subject"] = {"reference": "Patient/someone-else"}
    refused(app, client, body, SELECT, 422, "$.context.draftOrders.entry[0].resource.subject")


def test_a_dispatched_order_from_the_prefetch_for_someone_else_is_refused(app: Flask, client: FlaskClient) -> None:
    body = met_request()
    order = met_order(body) | {"subject": {"reference": "Patient/someone-else"}}
    body = dispatch(body, order)
    body["prefetch"]["dispatched"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": order}]}
    refused(app, client, body, DISPATCH, 422, "$.context.dispatchedOrders[0]")


def test_a_dispatched_order_read_from_the_ehr_for_someone_else_is_refused(
    app: Flask, client: FlaskClient, server_reads: dict[str, Any]
) -> None:
    body = met_request()
    order = met_order(body) | {"subject": {"reference": f"{FHIR}/Patient/someone-else"}}
    server_reads[f"ServiceRequest/{order['id']}"] = order
    body = dispatch(body, order) | {"fhirServer": FHIR}
    refused(app, client, body, DISPATCH, 422, "$.context.dispatchedOrders[0]")
    assert server_reads["_asked"] == [f"{FHIR}/ServiceRequest/{order['id']}"]


def test_an_appointment_based_on_another_patients_service_request_is_refused(app: Flask, client: FlaskClient) -> None:
    body = met_request()
    order = met_order(body) | {"subject": {"reference": "Patient/someone-else"}}
    body = book(body, appointment(body["context"]["patientId"], [{"reference": f"ServiceRequest/{order['id']}"}]))
    prefetch_orders(body, order)
    refused(app, client, body, BOOK, 422, "$.context.appointments.entry[0].resource.basedOn[0]")


def test_an_appointment_for_another_patient_is_refused_even_on_the_patients_order(
    app: Flask, client: FlaskClient
) -> None:
    body = met_request()
    order = met_order(body)
    appt = appointment("someone-else", [{"reference": f"ServiceRequest/{order['id']}"}])
    appt["participant"].insert(0, {"actor": {"reference": "Practitioner/dr"}, "status": "accepted"})
    body = book(body, appt)
    prefetch_orders(body, order)
    refused(app, client, body, BOOK, 422, "$.context.appointments.entry[0].resource.participant[1].actor")


def test_a_bare_appointment_for_another_patient_is_refused_before_anything_is_read(
    app: Flask, client: FlaskClient
) -> None:
    body = met_request()
    body = book(body, appointment("someone-else"), appointment(body["context"]["patientId"], id="appt-2"))
    refused(app, client, body, BOOK, 422, "$.context.appointments.entry[0].resource.participant[0].actor")


def test_a_contained_service_request_for_another_patient_is_refused(app: Flask, client: FlaskClient) -> None:
    body = met_request()
    order = met_order(body) | {"id": "sr-in", "subject": {"reference": "Patient/someone-else"}}
    body = book(body, appointment(body["context"]["patientId"], [{"reference": "#sr-in"}], contained=[order]))
    refused(app, client, body, BOOK, 422, "$.context.appointments.entry[0].resource.contained[0].subject")


# --- defect 2: the ServiceRequest behind an Appointment ----------------------------------------------------


def test_a_versioned_based_on_is_decided_as_the_service_request(client: FlaskClient) -> None:
    body = met_request()
    order = met_order(body)
    pid = body["context"]["patientId"]
    body = book(body, appointment(pid, [{"reference": f"ServiceRequest/{order['id']}/_history/3"}]))
    prefetch_orders(body, order)
    # the checker reads basedOn's last two segments; show it the reference without its version
    view = book(copy.deepcopy(body), appointment(pid, [{"reference": f"ServiceRequest/{order['id']}"}]))
    payload = decided(client, body, BOOK, view, {f"ServiceRequest/{order['id']}": order})
    (action,) = payload["systemActions"]
    assert (action["resource"]["resourceType"], action["resource"]["id"]) == ("ServiceRequest", order["id"])
    assert coverage_ext(action["resource"])["pa-needed"] == "satisfied"


def test_a_contained_service_request_is_decided_and_its_appointment_updated(client: FlaskClient) -> None:
    body = met_request()
    order = met_order(body) | {"id": "sr-in"}
    appt = appointment(body["context"]["patientId"], [{"reference": "#sr-in"}], contained=[order])
    body = book(body, appt)
    payload = decided(client, body, BOOK, body, {})
    (action,) = payload["systemActions"]
    resource = action["resource"]
    assert (resource["resourceType"], resource["id"]) == ("Appointment", "appt-1")
    assert coverage_ext(resource)["pa-needed"] == "satisfied", "decided as the MRI, not as the bare Appointment"
    assert resource["contained"] == [order], "the contained ServiceRequest travels unchanged inside its Appointment"
    again = book(met_request(), resource)  # the EHR stored the update: nothing new to say
    assert "systemActions" not in decided(client, again, BOOK, again, {})


def test_an_absolute_based_on_on_the_fhir_server_is_read_there(
    client: FlaskClient, server_reads: dict[str, Any]
) -> None:
    body = met_request()
    order = met_order(body)
    server_reads[f"ServiceRequest/{order['id']}"] = order
    url = f"{FHIR}/ServiceRequest/{order['id']}/_history/1"
    body = book(body, appointment(body["context"]["patientId"], [{"reference": url}])) | {"fhirServer": FHIR + "/"}
    view = book(
        copy.deepcopy(body), appointment(body["context"]["patientId"], [{"reference": url[: -len("/_history/1")]}])
    )
    payload = decided(client, body, BOOK, view, {f"ServiceRequest/{order['id']}": order})
    assert coverage_ext(payload["systemActions"][0]["resource"])["pa-needed"] == "satisfied"
    assert server_reads["_asked"] == [f"{FHIR}/ServiceRequest/{order['id']}"]


def test_an_absolute_based_on_elsewhere_is_not_read_and_not_replaced_by_the_appointment(
    app: Flask, client: FlaskClient, server_reads: dict[str, Any]
) -> None:
    body = met_request()
    order = met_order(body)
    server_reads[f"ServiceRequest/{order['id']}"] = order
    based_on = [{"reference": f"https://elsewhere.example/fhir/ServiceRequest/{order['id']}"}]
    body = book(body, appointment(body["context"]["patientId"], based_on)) | {"fhirServer": FHIR}
    refused(app, client, body, BOOK, 412, "$.context.appointments.entry[0].resource.basedOn[0]")
    assert server_reads["_asked"] == [], "the access token never goes to another server"


@pytest.mark.parametrize(
    "based_on",
    [
        [{"reference": "urn:uuid:8c1a6a7e-0c2b-4b1e-9a55-2f1c1d7a0b11"}],
        [{"reference": "ServiceRequest?identifier=http://ehr.example/orders|123"}],
        [{"type": "ServiceRequest", "identifier": {"system": "http://ehr.example/orders", "value": "123"}}],
        [{"reference": "ServiceRequest/not-anywhere"}],
    ],
)
def test_an_unresolvable_based_on_is_412_not_the_bare_appointment(
    app: Flask, client: FlaskClient, based_on: list[dict[str, Any]]
) -> None:
    body = met_request()
    body = book(body, appointment(body["context"]["patientId"], based_on))
    refused(app, client, body, BOOK, 412, "$.context.appointments.entry[0].resource.basedOn[0]")


@pytest.mark.parametrize(
    ("based_on", "where"),
    [
        ({"reference": "ServiceRequest/x"}, "basedOn"),
        (["ServiceRequest/x"], "basedOn[0]"),
        ([{"reference": 7}], "basedOn[0].reference"),
        ([{"reference": "CarePlan/1"}], "basedOn[0].reference"),
        ([{"reference": "#nowhere"}], "basedOn[0].reference"),
        ([{"reference": "Task?identifier=x"}], "basedOn[0].reference"),
    ],
)
def test_a_malformed_based_on_is_400(app: Flask, client: FlaskClient, based_on: Any, where: str) -> None:
    body = met_request()
    body = book(body, appointment(body["context"]["patientId"], based_on))
    refused(app, client, body, BOOK, 400, f"$.context.appointments.entry[0].resource.{where}")
