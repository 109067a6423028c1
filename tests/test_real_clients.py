"""Requests captured from the clients integrators try first (../shared/conformance/real-clients/).

The CDS Hooks sandbox's PAMA tab sends ``"code": {"coding": [{}]}`` and ``"reasonCode": []`` before a
field is picked; the Da Vinci CRD request generator sends ``fhirAuthorization.access_token: ""`` when
no auth server is configured. Those empty values are read as absent (a warning names the element),
so each capture gets a decision; what cannot be read (``null``, a missing member) is still a 400.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_server.pipeline.request import drop_empty_values
from cds_server.web.app import create_app
from tests import conformance
from tests.conftest import FhirTestServer

CAPTURED = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "real-clients"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
SERVICE = {"order-sign": "crd-order-sign", "order-select": "crd-order-select"}
SANDBOX = [
    "sandbox-order-sign-request.json",
    "sandbox-pama-order-select-empty-values.json",
    "sandbox-pama-order-select-no-reason-yet.json",
]
CRDGEN = "crdgen-order-sign-request.json"


def captured(name: str) -> dict[str, Any]:
    path = CAPTURED / name
    if not path.exists():
        pytest.skip(f"the captured requests are not here: {CAPTURED}")
    body: dict[str, Any] = json.loads(path.read_text())
    return body


def offline(body: dict[str, Any]) -> dict[str, Any]:
    """The capture without the FHIR server of its run (not there any more): its prefetch only."""
    body = copy.deepcopy(body)
    body.pop("fhirServer", None)
    body.pop("fhirAuthorization", None)
    return body


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(
        {
            "AUTH_REQUIRED": False,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'real-clients.sqlite'}",
            "CLOCK": lambda: datetime(2024, 6, 20, 15, 0, tzinfo=UTC),
        }
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post(f"/cds-services/{SERVICE[body['hook']]}", json=body)
    return response.status_code, response.get_json()


def coverage_information(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The coverage information of each updated order, by ``Type/id``."""
    out = {}
    for action in payload.get("systemActions") or []:
        resource = action["resource"]
        (ext,) = [e for e in resource.get("extension", []) if e["url"] == EXT]
        values = {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}
        out[f"{resource['resourceType']}/{resource['id']}"] = values
    return out


def draft_orders(body: dict[str, Any]) -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in body["context"]["draftOrders"]["entry"]]


def assert_decided(body: dict[str, Any], status: int, payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """200, a conformant answer, and coverage information for every draft order."""
    assert status == 200, payload
    assert conformance.check_response(body, payload) == []
    info = coverage_information(payload)
    assert sorted(info) == sorted(draft_orders(body)), "one coverage-information update per order"
    return info


@pytest.mark.parametrize("name", SANDBOX)
def test_each_sandbox_capture_gets_a_decision(client: FlaskClient, name: str) -> None:
    body = offline(captured(name))
    status, payload = post(client, body)
    for values in assert_decided(body, status, payload).values():
        assert values["pa-needed"] in {"no-auth", "auth-needed", "satisfied", "conditional"}


def test_the_sandbox_order_before_a_study_is_picked_is_conditional_never_no_auth_nor_approved(
    client: FlaskClient,
) -> None:
    """Fail closed: with its empty code dropped, the order has no billing code and names no service."""
    body = offline(captured("sandbox-pama-order-select-empty-values.json"))
    status, payload = post(client, body)
    (info,) = assert_decided(body, status, payload).values()
    assert info["pa-needed"] == "conditional"
    assert "satisfied-pa-id" not in info
    assert "PA-" not in json.dumps(payload)
    (action,) = payload["systemActions"]
    assert "code" not in action["resource"] and "reasonCode" not in action["resource"], "no empty values sent back"


def test_empty_values_are_logged_by_element_never_by_value(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = offline(captured("sandbox-pama-order-select-empty-values.json"))
    body["context"]["draftOrders"]["entry"][0]["resource"]["note"] = [{"text": "", "authorString": "Dr Who"}]
    with caplog.at_level(logging.WARNING, logger="cds_server.pipeline.request"):
        status, _ = post(client, body)
    assert status == 200
    (record,) = [r for r in caplog.records if "read as absent" in r.getMessage()]
    message = record.getMessage()
    where = "$.context.draftOrders.entry[0].resource"
    for element in ("code.coding[0]", "reasonCode", "note[0].text"):
        assert f"{where}.{element}" in message
    assert "Dr Who" not in message


def test_an_empty_access_token_is_no_token() -> None:
    body = captured(CRDGEN)
    kept = drop_empty_values(body)
    assert "fhirAuthorization" not in kept and kept["fhirServer"] == body["fhirServer"]
    assert body["fhirAuthorization"]["access_token"] == "", "the request itself is left as it came"


def test_a_request_without_empty_values_is_left_alone() -> None:
    body = json.loads((EXAMPLES / "order-sign-mri.json").read_text())
    assert drop_empty_values(body) is body


@pytest.mark.parametrize(
    ("change", "element"),
    [
        (lambda o: o.update(code=None), "code"),
        (lambda o: o.update(intent=""), "intent"),
        (lambda o: o.update(status=""), "status"),
    ],
    ids=["null", "required-intent-empty", "required-status-empty"],
)
def test_what_cannot_be_read_is_still_a_400(client: FlaskClient, change: Any, element: str) -> None:
    body = offline(captured("sandbox-order-sign-request.json"))
    change(body["context"]["draftOrders"]["entry"][0]["resource"])
    status, payload = post(client, body)
    assert status == 400, payload
    assert conformance.check_outcome(payload) == []
    (issue,) = payload["issue"]
    assert issue["expression"][0].startswith("$.context.draftOrders")
    assert element in issue["expression"][0] + issue["diagnostics"], "the answer names the element"


def test_a_token_with_an_empty_type_is_still_a_400(client: FlaskClient) -> None:
    body = captured("sandbox-order-sign-request.json")
    body["fhirAuthorization"] = {
        "access_token": "abc",
        "token_type": "",
        "expires_in": 30,
        "scope": "user/*.read",
        "subject": "cds",
    }
    status, payload = post(client, body)
    assert status == 400
    assert "token_type" in json.dumps(payload)


def test_the_crd_request_generator_capture_gets_a_decision_from_a_server_without_tokens(
    client: FlaskClient, open_fhir_server: FhirTestServer
) -> None:
    """Its prefetch keys are its own, so the record comes from the FHIR server, as in the captured run:
    a local server with the record of examples/order-sign-mri.json and no auth server. The empty token
    is not sent."""
    example = json.loads((EXAMPLES / "order-sign-mri.json").read_text())
    resources: dict[str, dict[str, Any]] = {}
    for value in example["prefetch"].values():
        for resource in [value, *[e["resource"] for e in (value or {}).get("entry", [])]]:
            if resource and resource.get("resourceType") != "Bundle":
                resources[f"{resource['resourceType']}/{resource['id']}"] = resource
    open_fhir_server.load(list(resources.values()))
    open_fhir_server.reset_log()
    body = captured(CRDGEN)
    body["fhirServer"] = open_fhir_server.base
    assert body["fhirAuthorization"]["access_token"] == ""
    status, payload = post(client, body)
    (info,) = assert_decided(drop_empty_values(body), status, payload).values()
    assert info["pa-needed"] != "no-auth", "a cervical MRI for neck pain is in the CarePath"
    seen = open_fhir_server.requests_seen()
    assert seen and all(r["authorization"] is None for r in seen), "no (empty) bearer token is sent"


def test_the_crd_request_generator_capture_without_its_server_is_412_not_400(client: FlaskClient) -> None:
    """Its own prefetch keys hold no history: without the FHIR server the data is missing, not unreadable."""
    status, payload = post(client, offline(captured(CRDGEN)))
    assert status == 412, payload
    assert conformance.check_outcome(payload) == []


def test_the_local_fhir_server_of_the_guide_answers_browsers(open_fhir_server: FhirTestServer) -> None:
    """docs/connecting-an-ehr.md runs tests/fhir_server with FHIR_CORS=1 for the sandbox's browser calls."""
    import requests

    origin = {"Origin": "http://127.0.0.1:8383"}
    preflight = requests.options(
        f"{open_fhir_server.base}/Patient/_search",
        headers=origin | {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
        timeout=5,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "content-type" in preflight.headers["Access-Control-Allow-Headers"].lower()
    answer = requests.get(f"{open_fhir_server.base}/Patient?_count=1", headers=origin, timeout=5)
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == "*"


# --- how each client signs its calls (docs/connecting-an-ehr.md §7, §8) ------------------------

BASE = "http://127.0.0.1:8282"
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"  # keys/jwk-keypair.json of cds-hooks/sandbox


def signed_app(tmp_path: Path, clients: list[dict[str, Any]], **extra: Any) -> FlaskClient:
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'signed.sqlite'}",
            "AUTH_REQUIRED": True,
            "PUBLIC_BASE_URL": BASE,
            "TRUSTED_CLIENTS": clients,
            **extra,
        }
    )
    return app.test_client()


def token(key: Any, alg: str, header: dict[str, Any], claims: dict[str, Any]) -> str:
    import jwt

    return jwt.encode(claims, key, algorithm=alg, headers={"typ": "JWT", **header})


def test_a_sandbox_token_is_checked_with_its_saved_key_offline(tmp_path: Path) -> None:
    """The sandbox signs ES384 with a jku on sandbox.cds-hooks.org; with its public key in jwks_file the
    jku is never fetched (no internet needed)."""
    import time
    import uuid

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())  # stands in for the sandbox's keys/ecprivkey.pem
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())) | {"kid": SANDBOX_KID, "alg": "ES384"}
    jwks = tmp_path / "sandbox-jwks.json"
    jwks.write_text(json.dumps({"keys": [public]}))
    client = signed_app(tmp_path, [{"iss": SANDBOX_ISS, "jwks_file": str(jwks)}])
    now = int(time.time())
    header = {"kid": SANDBOX_KID, "jku": "https://sandbox.cds-hooks.org/.well-known/jwks.json"}
    claims = {"iss": SANDBOX_ISS, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    discovery = token(key, "ES384", header, claims | {"aud": f"{BASE}/cds-services"})
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {discovery}"}).status_code == 200


def test_a_crd_request_generator_token_needs_its_key_saved_rs256_and_a_day_long_lifetime(tmp_path: Path) -> None:
    """The generator signs RS256 with a key made at page load, for a day, and publishes it at its
    /public_keys as ``[{"pem": <JWK>, "id": <kid>}]`` (not a JWK Set): by default it gets 401; with that
    key converted into a jwks_file, RS256 allowed and JWT_MAX_LIFETIME_SECONDS raised, it is accepted."""
    import time
    import uuid

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = "thumbprint-of-the-page-load-key"
    published = [{"pem": json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "id": kid}]
    issuer = "http://127.0.0.1:8484/fhir"  # the generator's iss is its EHR server URL
    now = int(time.time())
    header = {"kid": kid, "jku": "http://127.0.0.1:3000/public_keys"}
    claims = {"iss": issuer, "aud": f"{BASE}/cds-services", "iat": now, "exp": now + 86400}

    def call(client: FlaskClient) -> int:
        bearer = token(key, "RS256", header, claims | {"jti": str(uuid.uuid4())})
        return client.get("/cds-services", headers={"Authorization": f"Bearer {bearer}"}).status_code

    jwks = tmp_path / "crdgen-jwks.json"  # the conversion docs/connecting-an-ehr.md gives
    jwks.write_text(json.dumps({"keys": [k["pem"] | {"kid": k["id"]} for k in published]}))
    assert call(signed_app(tmp_path, [{"iss": issuer, "jwks_file": str(jwks)}])) == 401, "RS256, a day: refused"
    relaxed = signed_app(
        tmp_path,
        [{"iss": issuer, "jwks_file": str(jwks)}],
        JWT_ALGORITHMS=["ES384", "RS384", "RS256"],
        JWT_MAX_LIFETIME_SECONDS=90000,
    )
    assert call(relaxed) == 200
