"""The CDS Hooks service over HTTP: discovery, invocation, coverage information and errors."""

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

from cds_server.scenarios import SCENARIO_DIR, coverage_for, hook_request, load_scenario, searchset
from cds_server.web.app import create_app
from hooks import SERVICES
from tests import conformance

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "inferno-crd-fixtures"
NOW = datetime(2024, 3, 20, 15, 0, tzinfo=UTC)
SIGN = "/cds-services/crd-order-sign"


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The service on each database it supports: every HTTP test runs on SQLite and on PostgreSQL."""
    app = create_app({"AUTH_REQUIRED": False, "DATABASE_URL": database_url, "CLOCK": lambda: NOW})
    yield app
    app.extensions["cds"].store.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def scenario_request(name: str, **kw: Any) -> dict[str, Any]:
    return hook_request(load_scenario(SCENARIO_DIR / f"{name}.json"), **kw)


def post(client: FlaskClient, body: Any, url: str = SIGN) -> tuple[int, Any]:
    response = client.post(url, data=json.dumps(body), content_type="application/json")
    assert response.mimetype == "application/json"
    return response.status_code, response.get_json()


def coverage_ext(resource: dict[str, Any]) -> dict[str, Any]:
    ext = next(e for e in resource["extension"] if e["url"] == conformance.EXT)
    out: dict[str, Any] = {}
    for part in ext["extension"]:
        value = next(v for k, v in part.items() if k.startswith("value"))
        out.setdefault(part["url"], []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def ok(client: FlaskClient, body: dict[str, Any], url: str = SIGN) -> dict[str, Any]:
    status, payload = post(client, body, url)
    assert status == 200, payload
    problems = conformance.check_response(body, payload)
    assert not problems, problems
    return payload


# --- discovery -----------------------------------------------------------------


def test_discovery_lists_the_four_hooks_and_is_conformant(client: FlaskClient) -> None:
    doc = client.get("/cds-services").get_json()
    assert {s["hook"] for s in doc["services"]} == {"order-sign", "order-select", "order-dispatch", "appointment-book"}
    tokens = {s.hook: s.token_fields for s in SERVICES.values()}
    assert conformance.check_discovery(doc, tokens) == []
    sign = next(s for s in doc["services"] if s["hook"] == "order-sign")
    assert sign["prefetch"]["coverage"] == "Coverage?patient={{context.patientId}}&status=active"
    codes = [o["code"] for o in sign["extension"]["davinci-crd.configuration-options"]]
    assert "coverage-info" in codes and "max-cards" in codes


def test_every_prefetch_token_is_a_context_field_of_its_hook(client: FlaskClient) -> None:
    for service in client.get("/cds-services").get_json()["services"]:
        fields = SERVICES[service["id"]].token_fields
        for template in service["prefetch"].values():
            for token in conformance.TOKEN.findall(template):
                assert token.startswith("context.") and token.removeprefix("context.") in fields, (service["id"], token)


def test_prefetch_covers_every_resource_type_the_carepath_reads(app: Flask) -> None:
    from cds_server.engine.model import Leaf
    from cds_server.engine.operators import CLINICAL_TYPES
    from cds_server.pipeline.prefetch import TEMPLATES

    fetched = {t.split("?")[0].split("/")[0] for t in TEMPLATES.values()}
    for cp in app.extensions["cds"].carepaths:
        for node in cp.nodes.values():
            if isinstance(node, Leaf):
                assert set(node.args.get("resourceTypes") or CLINICAL_TYPES) <= fetched | {
                    "MedicationAdministration"
                }, node.id
        for component in cp.facts["conservativeCare"]["components"].values():
            assert set(component["resourceTypes"]) <= fetched | {"MedicationAdministration"}


# --- coverage information per outcome -----------------------------------------------


def test_criteria_met_gives_satisfied_prior_auth_with_a_kept_number(client: FlaskClient, app: Flask) -> None:
    body = scenario_request("mri/met-failed-conservative-care")
    payload = ok(client, body)
    (action,) = payload["systemActions"]
    info = coverage_ext(action["resource"])
    assert info["covered"] == "covered" and info["pa-needed"] == "satisfied"
    assert info["satisfied-pa-id"].startswith("PA-") and info["expiry-date"] == "2024-09-16"
    assert info["coverage"] == {"reference": "Coverage/cov-1"}
    assert info["billingCode"] == {"system": "http://www.ama-assn.org/go/cpt", "code": "72141"}
    stored = app.extensions["cds"].store.assertion(info["coverage-assertion-id"])
    assert stored["pa_id"] == info["satisfied-pa-id"] and stored["outcome"] == "criteria-met"
    assert stored["decision"]["decision"]["service"]["id"] == "mri"
    assert stored["hook_instance"] == body["hookInstance"], "the determination names its invocation"
    assert 0 < stored["decided_ms"] < 5000, "and keeps its latency"


def test_same_order_coverage_and_decision_keep_their_assertion_and_number(client: FlaskClient) -> None:
    first = coverage_ext(
        ok(client, scenario_request("mri/met-failed-conservative-care"))["systemActions"][0]["resource"]
    )
    again = coverage_ext(
        ok(client, scenario_request("mri/met-failed-conservative-care"))["systemActions"][0]["resource"]
    )
    assert first["coverage-assertion-id"] == again["coverage-assertion-id"]
    assert first["satisfied-pa-id"] == again["satisfied-pa-id"]


def test_repeat_call_with_the_assertion_already_on_the_order_gets_no_new_action(client: FlaskClient) -> None:
    body = scenario_request("mri/met-failed-conservative-care")
    annotated = ok(client, body)["systemActions"][0]["resource"]
    repeat = copy.deepcopy(body)
    repeat["context"]["draftOrders"]["entry"][0]["resource"] = annotated
    payload = ok(client, repeat)
    assert "systemActions" not in payload, "nothing new: no systemAction (CRD resp-35)"


def test_auto_approval_can_be_switched_off(tmp_path: Path) -> None:
    app = create_app(
        {
            "AUTH_REQUIRED": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}",
            "CLOCK": lambda: NOW,
            "AUTO_APPROVAL": False,
        }
    )
    info = coverage_ext(
        ok(app.test_client(), scenario_request("mri/met-failed-conservative-care"))["systemActions"][0]["resource"]
    )
    assert info["pa-needed"] == "auth-needed" and "satisfied-pa-id" not in info


def test_auto_approval_off_per_carepath_parameter(tmp_path: Path) -> None:
    app = create_app(
        {
            "AUTH_REQUIRED": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}",
            "CLOCK": lambda: NOW,
            "CAREPATH_OVERRIDES": {"neck-pain": {"autoApproval": False}},
        }
    )
    info = coverage_ext(
        ok(app.test_client(), scenario_request("mri/met-failed-conservative-care"))["systemActions"][0]["resource"]
    )
    assert info["pa-needed"] == "auth-needed"


def _order_sign(order: dict[str, Any], record: list[dict[str, Any]], pid: str = "p1") -> dict[str, Any]:
    keys = {
        "Condition": "conditions",
        "Procedure": "procedures",
        "Observation": "observations",
        "MedicationStatement": "medicationStatements",
        "QuestionnaireResponse": "questionnaireResponses",
    }
    prefetch: dict[str, Any] = {
        "patient": {"resourceType": "Patient", "id": pid, "birthDate": "1970-01-01"},
        "coverage": searchset([coverage_for(pid)]),
    }
    for key in (
        "conditions",
        "procedures",
        "observations",
        "medicationRequests",
        "medicationStatements",
        "medicationDispenses",
        "allergies",
        "devices",
        "diagnosticReports",
        "imagingStudies",
        "encounters",
        "questionnaireResponses",
    ):
        prefetch[key] = searchset([r for r in record if keys.get(r["resourceType"]) == key])
    return {
        "hookInstance": "5b0c7c48-0f5a-4e4a-8d4f-1f1f6d0e1a11",
        "hook": "order-sign",
        "context": {
            "userId": "Practitioner/dr",
            "patientId": pid,
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"fullUrl": "urn:uuid:1", "resource": order}],
            },
        },
        "prefetch": prefetch,
    }


def _sr(code: str, reason: str | None = "M54.2", oid: str = "sr1") -> dict[str, Any]:
    order: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": oid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2024-03-15",
        "requester": {"reference": "Practitioner/dr"},
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]},
    }
    if reason:
        order["reasonCode"] = [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": reason}]}]
    return order


def test_documentation_needed_points_to_the_questionnaire(client: FlaskClient) -> None:
    payload = ok(client, _order_sign(_sr("72141"), []))
    info = coverage_ext(payload["systemActions"][0]["resource"])
    assert (info["covered"], info["pa-needed"], info["doc-needed"], info["doc-purpose"]) == (
        "covered",
        "auth-needed",
        "clinical",
        "withpa",
    )
    assert info["questionnaire"] == "http://cds.payer.example/fhir/Questionnaire/neck-pain-mri|3.0.0"


def test_order_select_never_asks_for_clinical_documentation(client: FlaskClient) -> None:
    body = _order_sign(_sr("72141"), [])
    body["hook"] = "order-select"
    body["context"]["selections"] = ["ServiceRequest/sr1"]
    payload = ok(client, body, "/cds-services/crd-order-select")
    info = coverage_ext(payload["systemActions"][0]["resource"])
    assert "doc-needed" not in info and info["pa-needed"] == "auth-needed"


def test_contraindicated_names_the_failing_criterion(client: FlaskClient) -> None:
    claus = {
        "resourceType": "Condition",
        "id": "cl",
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "A41.9"}]},
        "onsetDateTime": "2024-03-10",
    }
    payload = ok(client, _order_sign(_sr("64490", "M47.812"), [claus]))
    info = coverage_ext(payload["systemActions"][0]["resource"])
    assert info["pa-needed"] == "auth-needed"
    assert "Systemic infection (FI-NI1)" in info["reason"]["text"]


def test_code_no_carepath_governs_needs_no_authorization(client: FlaskClient) -> None:
    info = coverage_ext(ok(client, _order_sign(_sr("99213"), []))["systemActions"][0]["resource"])
    assert (info["covered"], info["pa-needed"]) == ("covered", "no-auth")


def test_carepath_code_outside_the_cohort_goes_to_review(client: FlaskClient) -> None:
    info = coverage_ext(ok(client, _order_sign(_sr("72141", "M17.11"), []))["systemActions"][0]["resource"])
    assert info["pa-needed"] == "auth-needed" and "outside" in info["reason"]["text"]


def test_inactive_coverage_is_not_covered(client: FlaskClient) -> None:
    body = _order_sign(_sr("72141"), [])
    body["prefetch"]["coverage"] = searchset([coverage_for("p1") | {"status": "cancelled"}])
    info = coverage_ext(ok(client, body)["systemActions"][0]["resource"])
    assert info["covered"] == "not-covered" and "pa-needed" not in info
    assert info["reason"]["coding"][0]["code"] == "no-active-coverage"


def test_unmatched_member_is_not_covered(client: FlaskClient) -> None:
    body = _order_sign(_sr("72141"), [])
    cov = coverage_for("p1")
    del cov["subscriberId"]
    body["prefetch"]["coverage"] = searchset([cov])
    info = coverage_ext(ok(client, body)["systemActions"][0]["resource"])
    assert info["reason"]["coding"][0]["code"] == "no-member-found"


@pytest.mark.parametrize("coverages", [[], [coverage_for("p1", "a"), coverage_for("p1", "b")]])
def test_no_coverage_or_several_is_a_400(client: FlaskClient, coverages: list[dict[str, Any]]) -> None:
    body = _order_sign(_sr("72141"), [])
    body["prefetch"]["coverage"] = searchset(coverages)
    status, payload = post(client, body)
    assert status == 400 and conformance.check_outcome(payload) == []


def test_coverage_info_can_be_switched_off_by_configuration(client: FlaskClient) -> None:
    body = _order_sign(_sr("72141"), [])
    body["extension"] = {"davinci-crd.configuration": {"coverage-info": False, "unknown-option": True}}
    payload = ok(client, body)
    assert "systemActions" not in payload


def test_history_missing_without_fhir_server_is_412(client: FlaskClient) -> None:
    body = _order_sign(_sr("72141"), [])
    del body["prefetch"]["conditions"]
    status, payload = post(client, body)
    assert status == 412 and "conditions" in json.dumps(payload)


def test_prefetch_null_and_operation_outcome_are_handled(client: FlaskClient) -> None:
    body = _order_sign(_sr("72141"), [])
    body["prefetch"]["patient"] = None
    body["prefetch"]["devices"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception"}],
    }
    status, _ = post(client, body)
    assert status == 412, "an OperationOutcome means the client failed: we must fetch, and cannot"


# --- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda b: b.pop("hookInstance"), 400),
        (lambda b: b.update(hookInstance="not-a-uuid"), 400),
        (lambda b: b.update(hook="order-select"), 400),
        (lambda b: b["context"].pop("patientId"), 400),
        (lambda b: b["context"].update(userId="Patient/1"), 400),
        (
            lambda b: b.update(
                fhirAuthorization={
                    "access_token": "x",
                    "token_type": "Bearer",
                    "expires_in": 30,
                    "scope": "s",
                    "subject": "c",
                }
            ),
            400,
        ),
        (lambda b: b["context"]["draftOrders"]["entry"][0]["resource"].pop("intent"), 400),
        (lambda b: b["context"]["draftOrders"]["entry"][0]["resource"].pop("id"), 422),
        (lambda b: b["context"]["draftOrders"].update(entry=[]), 422),
        (lambda b: b.update(extension={"davinci-crd.configuration": {"max-cards": "ten"}}), 422),
        (lambda b: b.update(extension={"davinci-crd.configuration": {"max-cards": False}}), 422),
        (lambda b: b.update(extension={"davinci-crd.configuration": {"guideline": 0}}), 422),
        (lambda b: b.update(extension={"davinci-crd.requestedVersion": "9.9"}), 422),
    ],
)
def test_invalid_requests_get_the_right_4xx_with_an_operation_outcome(
    client: FlaskClient, mutate: Any, status: int
) -> None:
    body = _order_sign(_sr("72141"), [])
    mutate(body)
    got, payload = post(client, body)
    assert got == status, payload
    assert conformance.check_outcome(payload) == []


def test_unknown_members_and_extensions_are_ignored(client: FlaskClient) -> None:
    body = _order_sign(_sr("72141"), [])
    body["surprise"] = {"a": 1}
    body["context"]["newField"] = "x"
    body["extension"] = {"com.example.thing": {"x": 1}}
    ok(client, body)


def test_malformed_bodies(client: FlaskClient) -> None:
    assert client.post(SIGN, data="{", content_type="application/json").status_code == 400
    assert client.post(SIGN, data="[]", content_type="application/json").status_code == 400
    assert client.post(SIGN, data="{}", content_type="text/plain").status_code == 415
    deep = "[" * 5000 + "]" * 5000
    response = client.post(SIGN, data=deep, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["resourceType"] == "OperationOutcome"
    assert client.post("/cds-services/nope", json={}).status_code == 404
    assert client.get(SIGN).status_code == 405


@pytest.mark.parametrize(
    "raw",
    [
        '{"hook": "order-sign", "x": NaN}',
        '{"hook": "order-sign", "x": -Infinity}',
        '{"hook": "order-sign", "x": 1e400}',
        '{"hook": "order-sign", "x": "bell\\u0007"}',
        '{"hook": "order-sign", "x": "half \\ud800 pair"}',
    ],
    ids=["nan", "infinity", "overflow", "control-character", "unpaired-surrogate"],
)
def test_json_that_is_not_json_is_a_400_and_still_recorded(client: FlaskClient, app: Flask, raw: str) -> None:
    """Python's parser accepts these; RFC 8259 and the databases do not. The audit row must not be lost."""
    store = app.extensions["cds"].store
    before = store.count("invocations")
    response = client.post(SIGN, data=raw, content_type="application/json")
    assert response.status_code == 400 and conformance.check_outcome(response.get_json()) == []
    assert store.count("invocations") == before + 1


def test_a_body_over_the_limit_is_a_413_whether_declared_or_chunked(database_url: str) -> None:
    app = create_app(
        {"AUTH_REQUIRED": False, "DATABASE_URL": database_url, "CLOCK": lambda: NOW, "MAX_CONTENT_LENGTH": 50_000}
    )
    client = app.test_client()
    body = json.dumps(scenario_request("mri/met-failed-conservative-care") | {"padding": "x" * 60_000})
    declared = client.post(SIGN, data=body, content_type="application/json")
    assert declared.status_code == 413 and conformance.check_outcome(declared.get_json()) == []
    import io

    chunked = client.post(
        SIGN,
        input_stream=io.BytesIO(body.encode()),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn sets it for a chunked body
    )
    assert chunked.status_code == 413, chunked.get_json()
    assert app.extensions["cds"].store.count("invocations") == 2, "refused calls are still recorded"
    app.extensions["cds"].store.close()


def test_a_huge_number_inside_a_valid_request_is_refused_not_turned_into_infinity(client: FlaskClient) -> None:
    body = json.dumps(scenario_request("mri/met-failed-conservative-care")).replace("{", '{"example.big": 1e400, ', 1)
    response = client.post(SIGN, data=body, content_type="application/json")
    assert response.status_code == 400 and "out of range" in json.dumps(response.get_json())


def test_inferno_order_sign_fixture_is_accepted_as_cds_hooks(client: FlaskClient) -> None:
    """Inferno's own order-sign request is valid CDS Hooks: no 400. Its orders name Patient/1288992 under
    patientId "example": refused (422, naming the reference) before anything is read. Made consistent,
    with no Coverage and an unreachable fhirServer, it asks for what is missing: 412."""
    if not FIXTURES.exists():
        pytest.skip("shared/conformance not beside the checkout")
    body = json.loads((FIXTURES / "order_sign_hook_request.json").read_text())
    body["fhirServer"] = "http://127.0.0.1:9/fhir"
    status, payload = post(client, body)
    assert status == 422 and conformance.check_outcome(payload) == []
    assert payload["issue"][0]["expression"][0].endswith((".subject", ".patient"))
    body["context"]["patientId"] = "1288992"
    status, payload = post(client, body)
    assert status == 412 and conformance.check_outcome(payload) == []


def test_every_invocation_is_recorded_without_the_token(client: FlaskClient, app: Flask) -> None:
    body = _order_sign(_sr("72141"), [])
    body["fhirServer"] = "http://127.0.0.1:9/fhir"
    body["fhirAuthorization"] = {
        "access_token": "SECRET-TOKEN-123",
        "token_type": "Bearer",
        "expires_in": 30,
        "scope": "user/*.read",
        "subject": "cds",
    }
    post(client, body)
    post(client, {"hook": "order-sign"})
    store = app.extensions["cds"].store
    assert store.count("invocations") == 2
    with store.engine.connect() as conn:
        dump = json.dumps([dict(r) for r in conn.execute(store_table(store)).mappings()], default=str)
    assert "SECRET-TOKEN-123" not in dump


def test_invocation_records_keep_references_and_digests_not_the_chart(client: FlaskClient, app: Flask) -> None:
    """CRD sec-6: the audit row proves what was seen without keeping a second copy of the record."""
    from cds_server.records.audit import digest

    body = scenario_request("mri/met-failed-conservative-care")
    ok(client, body)
    store = app.extensions["cds"].store
    with store.engine.connect() as conn:
        (row,) = conn.execute(store_table(store)).mappings().all()
    kept = row["request"]
    orders = [e["resource"] for e in body["context"]["draftOrders"]["entry"]]
    assert [e["resource"] for e in kept["context"]["draftOrders"]["entry"]] == orders, "the orders, in full"
    assert kept["context"]["patientId"] == body["context"]["patientId"]
    for key, value in body["prefetch"].items():
        summary = kept["prefetch"][key]
        assert summary["sha256"] == digest(value), key
        entries = [e["resource"] for e in value.get("entry", [])] if "entry" in value else [value]
        assert summary["refs"] == [f"{r['resourceType']}/{r['id']}" for r in entries], key
    condition = next(e["resource"] for e in body["prefetch"]["conditions"]["entry"])
    assert json.dumps(condition["code"]) not in json.dumps(kept), "no clinical content outside the orders"
    assert row["response"]["systemActions"], "the answer is kept whole"


def store_table(store: Any) -> Any:
    import sqlalchemy as sa

    from cds_server.records.store import invocations

    return sa.select(invocations)


def test_the_readme_example_call_gets_an_authorization(client: FlaskClient) -> None:
    body = json.loads((Path(__file__).resolve().parent.parent / "examples" / "order-sign-mri.json").read_text())
    payload = ok(client, body)
    info = coverage_ext(payload["systemActions"][0]["resource"])
    assert info["pa-needed"] == "satisfied" and info["satisfied-pa-id"].startswith("PA-")


def test_the_answer_the_readme_shows_is_the_real_one(client: FlaskClient) -> None:
    """The README's abridged answer must stay true: same cards, links and coverage information."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    shown = json.loads(readme.split("approves it and says why:\n\n```json\n", 1)[1].split("```", 1)[0])
    body = json.loads((Path(__file__).resolve().parent.parent / "examples" / "order-sign-mri.json").read_text())
    real = ok(client, body)

    def pa(text: str) -> str:
        return re.sub(r"valid until \d{4}-\d{2}-\d{2}", "valid until …", re.sub(r"PA-[0-9A-Z]{10}", "PA-…", text))

    assert [pa(c["summary"]) for c in shown["cards"]] == [pa(c["summary"]) for c in real["cards"]]
    assert [[link["label"] for link in c.get("links", [])] for c in shown["cards"]] == [
        [link["label"] for link in c.get("links", [])] for c in real["cards"]
    ]
    stable = ("coverage", "covered", "pa-needed", "billingCode")
    (shown_ext,) = shown["systemActions"][0]["resource"]["extension"]
    (real_ext,) = real["systemActions"][0]["resource"]["extension"]
    assert [p["url"] for p in shown_ext["extension"]] == [p["url"] for p in real_ext["extension"]]
    assert [p for p in shown_ext["extension"] if p["url"] in stable] == [
        p for p in real_ext["extension"] if p["url"] in stable
    ]


def test_what_is_not_an_order_never_reaches_the_record(client: FlaskClient, app: Flask) -> None:
    """Error paths and odd shapes keep no token and no chart: not in the request kept, not in the answer kept."""
    order = _sr("72141")
    order["contained"] = [{"resourceType": "Patient", "id": "pp", "name": [{"family": "SECRET-NAME-1"}]}]
    body = _order_sign(order, [])
    body["context"]["draftOrders"]["entry"].append(
        {"resource": {"resourceType": "Condition", "id": "c", "code": {"text": "SECRET-DIAGNOSIS-2"}}}
    )
    body["context"]["extraThing"] = {"resourceType": "Bundle", "entry": [{"resource": {"id": "x", "note": "SECRET-3"}}]}
    post(client, body)  # a Condition is not an order: 422
    bare = _order_sign(_sr("72141"), [])
    bare["fhirServer"] = "https://ehr.example/fhir"
    bare["fhirAuthorization"] = "Bearer SECRET-TOKEN-4"
    assert post(client, bare)[0] == 400
    odd = _order_sign(_sr("72141"), [])
    odd["prefetch"]["patient"] = {"id": "p1", "name": [{"family": "SECRET-NAME-5"}]}
    status, payload = post(client, odd)
    assert status < 500 and "SECRET-NAME-5" not in json.dumps(payload), "errors never echo the data"
    store = app.extensions["cds"].store
    with store.engine.connect() as conn:
        dump = json.dumps([dict(r) for r in conn.execute(store_table(store)).mappings()], default=str)
    for secret in ("SECRET-NAME-1", "SECRET-DIAGNOSIS-2", "SECRET-3", "SECRET-TOKEN-4", "SECRET-NAME-5"):
        assert secret not in dump, secret
