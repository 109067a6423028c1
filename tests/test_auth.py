"""Client authentication: CDS Hooks JWTs as the sandbox and Inferno send them, and every way to get it wrong."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from flask.testing import FlaskClient

from cds_server.web.app import create_app

BASE = "https://cds.payer.example"
SANDBOX = "https://sandbox.cds-hooks.org"
INFERNO = "https://inferno.healthit.gov/suites/custom/crd_client"


class Keys:
    """Key pairs made at test time, and their public JWK Sets."""

    def __init__(self) -> None:
        self.ec = ec.generate_private_key(ec.SECP384R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key())) | {
            "kid": "ec-1",
            "alg": "ES384",
        }
        self.rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key())) | {
            "kid": "rsa-1",
            "alg": "RS384",
        }


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def jwks_server(keys: Keys) -> Iterator[str]:
    """A JWK Set on loopback, like the sandbox's public jku."""
    body = json.dumps({"keys": [keys.ec_jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            self.send_response(200 if self.path == "/jwks.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if self.path == "/jwks.json" else b"{}")

        def log_message(self, *args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/jwks.json"
    server.shutdown()
    server.server_close()


def make_app(tmp_path: Path, keys: Keys, jku: str, **extra: Any) -> Flask:
    jwks_file = tmp_path / "inferno-jwks.json"
    jwks_file.write_text(json.dumps({"keys": [keys.rsa_jwk, keys.ec_jwk]}))
    clients = [{"iss": SANDBOX, "jku": [jku]}, {"iss": INFERNO, "jwks_file": str(jwks_file)}]
    return create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'auth.sqlite'}",
            "PUBLIC_BASE_URL": BASE,
            "TRUSTED_CLIENTS": clients,
            **extra,
        }
    )


@pytest.fixture
def client(tmp_path: Path, keys: Keys, jwks_server: str) -> FlaskClient:
    return make_app(tmp_path, keys, jwks_server).test_client()


def token(
    keys: Keys,
    aud: str,
    iss: str = INFERNO,
    alg: str = "RS384",
    kid: str | None = None,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {"iss": iss, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())} | claims
    key = keys.rsa if alg.startswith("RS") else keys.ec
    header = {"typ": "JWT", "kid": kid or ("rsa-1" if alg.startswith("RS") else "ec-1")} | (headers or {})
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=alg, headers=header)


def get(client: FlaskClient, bearer: str | None, path: str = "/cds-services") -> Any:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return client.get(path, headers=headers, base_url=BASE)


def test_inferno_shape_rs384_with_configured_jwks(client: FlaskClient, keys: Keys) -> None:
    assert get(client, token(keys, f"{BASE}/cds-services")).status_code == 200


def test_inferno_shape_es384_with_configured_jwks(client: FlaskClient, keys: Keys) -> None:
    assert get(client, token(keys, f"{BASE}/cds-services", alg="ES384")).status_code == 200


def test_sandbox_shape_es384_with_jku(client: FlaskClient, keys: Keys, jwks_server: str) -> None:
    bearer = token(keys, f"{BASE}/cds-services", iss=SANDBOX, alg="ES384", headers={"jku": jwks_server})
    assert get(client, bearer).status_code == 200


def test_inferno_shape_with_an_unlisted_jku_uses_the_configured_key(client: FlaskClient, keys: Keys) -> None:
    """Inferno adds a ``jku`` to its session; the saved JWK Set already names the key, so it is used."""
    bearer = token(keys, f"{BASE}/cds-services", alg="ES384", headers={"jku": "https://inferno.example/jwks.json"})
    assert get(client, bearer).status_code == 200


def test_the_audience_is_the_exact_endpoint(client: FlaskClient, keys: Keys) -> None:
    for_discovery = token(keys, f"{BASE}/cds-services")
    response = client.post(
        "/cds-services/crd-order-sign", json={}, base_url=BASE, headers={"Authorization": f"Bearer {for_discovery}"}
    )
    assert response.status_code == 401
    for_service = token(keys, f"{BASE}/cds-services/crd-order-sign")
    response = client.post(
        "/cds-services/crd-order-sign", json={}, base_url=BASE, headers={"Authorization": f"Bearer {for_service}"}
    )
    assert response.status_code == 400, "authenticated; now the empty body is the problem"
    assert get(client, token(keys, [f"{BASE}/x", f"{BASE}/cds-services"])).status_code == 200, "aud may be a list"


def test_long_jtis_that_share_a_prefix_are_different_tokens(client: FlaskClient, keys: Keys) -> None:
    prefix = "x" * 400
    first = token(keys, f"{BASE}/cds-services", jti=prefix + "-1")
    second = token(keys, f"{BASE}/cds-services", jti=prefix + "-2")
    assert get(client, first).status_code == 200
    assert get(client, second).status_code == 200, "not a replay: only the first 300 characters agree"
    assert get(client, second).status_code == 401, "but the same one again is"


def test_a_jti_is_accepted_once(client: FlaskClient, keys: Keys) -> None:
    bearer = token(keys, f"{BASE}/cds-services")
    assert get(client, bearer).status_code == 200
    assert get(client, bearer).status_code == 401


def bad_tokens(keys: Keys, jku: str) -> dict[str, str]:
    aud = f"{BASE}/cds-services"
    now = int(time.time())
    unsigned = jwt.encode(
        {"iss": INFERNO, "aud": aud, "exp": now + 60, "iat": now, "jti": "x"},
        None,
        algorithm="none",
        headers={"kid": "rsa-1", "typ": "JWT"},
    )
    hmac = jwt.encode(
        {"iss": INFERNO, "aud": aud, "exp": now + 60, "iat": now, "jti": "y"},
        "a-shared-secret-that-is-long-enough-for-hs256",
        algorithm="HS256",
        headers={"kid": "rsa-1", "typ": "JWT"},
    )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {"iss": INFERNO, "aud": aud, "exp": now + 60, "iat": now, "jti": "z"},
        other,
        algorithm="RS384",
        headers={"kid": "rsa-1", "typ": "JWT"},
    )
    return {
        "alg none": unsigned,
        "symmetric HS256": hmac,
        "signed by another key": forged,
        "no kid": jwt.encode(
            {"iss": INFERNO, "aud": aud, "exp": now + 60, "iat": now, "jti": "a"},
            keys.rsa,
            algorithm="RS384",
            headers={"typ": "JWT"},
        ),
        "typ not JWT": token(keys, aud, headers={"typ": "at+jwt"}),
        "unknown issuer": token(keys, aud, iss="https://evil.example"),
        "wrong audience": token(keys, "https://other.example/cds-services"),
        "expired": token(keys, aud, exp=now - 120, iat=now - 400),
        "issued in the future": token(keys, aud, iat=now + 600, exp=now + 900),
        "lives too long": token(keys, aud, exp=now + 7200),
        "no jti": token(keys, aud, jti=None),
        "no exp": token(keys, aud, exp=None),
        "jku not allowed": token(keys, aud, iss=SANDBOX, alg="ES384", headers={"jku": "http://127.0.0.1:9/jwks"}),
        "unknown kid": token(keys, aud, kid="nope"),
        "RS256 not allowed": token(keys, aud, alg="RS256"),
        "garbage": "not.a.jwt",
    }


BAD_CASES = [
    "alg none",
    "symmetric HS256",
    "signed by another key",
    "no kid",
    "typ not JWT",
    "unknown issuer",
    "wrong audience",
    "expired",
    "issued in the future",
    "lives too long",
    "no jti",
    "no exp",
    "jku not allowed",
    "unknown kid",
    "RS256 not allowed",
    "garbage",
]


def test_the_bad_cases_are_all_built(keys: Keys) -> None:
    assert sorted(bad_tokens(keys, "x")) == sorted(BAD_CASES)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_tokens_get_401_with_no_detail(
    client: FlaskClient, keys: Keys, jwks_server: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    bearer = bad_tokens(keys, jwks_server)[case]
    with caplog.at_level(logging.INFO):
        response = get(client, bearer)
    assert response.status_code == 401, case
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json()["issue"][0]["diagnostics"] == "Unauthorized"
    assert bearer not in caplog.text, "tokens are never logged"


def test_no_token_gets_401_on_every_protected_endpoint(client: FlaskClient) -> None:
    for method, path in [
        ("GET", "/cds-services"),
        ("POST", "/cds-services/crd-order-sign"),
        ("POST", "/cds-services/crd-order-sign/feedback"),
        ("GET", "/fhir/Questionnaire"),
        ("GET", "/determinations/ca-x"),
    ]:
        assert client.open(path, method=method, base_url=BASE).status_code == 401, path
    assert client.get("/healthz", base_url=BASE).status_code == 200
    assert client.get("/carepaths/neck-pain", base_url=BASE).status_code == 200, "the guideline itself is public"


def redis_url() -> str:
    """The test Redis (skipped on a laptop without one, required under CI)."""
    url = os.environ.get("CDS_TEST_REDIS", "redis://127.0.0.1:6379/15")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required under CI and is not reachable at {url}")
        pytest.skip(f"Redis not reachable at {url}")
    return url


def test_jti_replay_is_refused_through_redis(tmp_path: Path, keys: Keys, jwks_server: str) -> None:
    url = redis_url()
    first = make_app(tmp_path, keys, jwks_server, REDIS_URL=url).test_client()
    second = (
        make_app(tmp_path / "other", keys, jwks_server, REDIS_URL=url) if (tmp_path / "other").mkdir() is None else None
    )
    assert second is not None
    bearer = token(keys, f"{BASE}/cds-services")
    assert get(first, bearer).status_code == 200
    assert get(second.test_client(), bearer).status_code == 401, "another instance with another database, same Redis"


def test_demo_tokens_only_for_a_browser_on_this_machine(tmp_path: Path) -> None:
    """With the bench on and authentication on, /demo/token must not hand the keys to the network."""
    app = create_app(
        {
            "AUTH_REQUIRED": True,
            "TRUSTED_CLIENTS": [],
            "DATABASE_URL": f"sqlite:///{tmp_path / 'd.sqlite'}",
            "DEMO_ENABLED": True,
            "DEMO_KEY_FILE": str(tmp_path / "demo.pem"),
        }
    )
    client = app.test_client()
    remote = client.post(
        "/demo/token", json={"path": "/cds-services"}, environ_overrides={"REMOTE_ADDR": "203.0.113.9"}
    )
    assert remote.status_code == 403 and remote.get_json()["resourceType"] == "OperationOutcome"
    local = client.post("/demo/token", json={"path": "/cds-services"}).get_json()["token"]
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {local}"}).status_code == 200


def test_decision_links_in_cards_open_without_a_token_and_only_for_that_decision(tmp_path: Path, keys: Keys) -> None:
    """A clinician clicks the card's link in a browser that has no JWT: the signed link opens that page only."""
    app = make_app(tmp_path, keys, "http://127.0.0.1:9/jwks")
    client = app.test_client()
    body = json.loads((Path(__file__).resolve().parent.parent / "examples" / "order-sign-mri.json").read_text())
    bearer = token(keys, f"{BASE}/cds-services/crd-order-sign")
    payload = client.post(
        "/cds-services/crd-order-sign", json=body, base_url=BASE, headers={"Authorization": f"Bearer {bearer}"}
    ).get_json()
    link = next(
        link["url"] for card in payload["cards"] for link in card.get("links", []) if "/determinations/" in link["url"]
    )
    path = link.removeprefix(BASE)
    assert "sig=" in path and "exp=" in path
    assert client.get(path, base_url=BASE).status_code == 200, "the signed link opens the decision"
    plain = path.split("?")[0]
    assert client.get(plain, base_url=BASE).status_code == 401, "without the signature a token is needed"
    other = path.replace("/determinations/ca-", "/determinations/ca-0", 1)
    assert client.get(other, base_url=BASE).status_code == 401, "the signature is for that decision only"
    tampered = path[:-4] + ("0000" if not path.endswith("0000") else "1111")
    assert client.get(tampered, base_url=BASE).status_code == 401


@pytest.mark.parametrize("jti_store", ["database", "redis"])
def test_a_used_token_stays_refused_through_the_leeway_after_exp(
    tmp_path: Path, keys: Keys, jwks_server: str, jti_store: str
) -> None:
    """PyJWT accepts a token until exp + leeway: the jti must be remembered at least that long (issue 11.1)."""
    extra = {"REDIS_URL": redis_url()} if jti_store == "redis" else {}
    client = make_app(tmp_path, keys, jwks_server, **extra).test_client()
    now = int(time.time())
    bearer = token(keys, f"{BASE}/cds-services", exp=now + 1, iat=now)
    assert get(client, bearer).status_code == 200
    time.sleep(max(0.0, now + 2.5 - time.time()))  # past exp and past exp + 1 s, well inside the 30 s leeway
    for _ in range(3):
        assert get(client, bearer).status_code == 401, "a replay after exp but within the leeway"


def test_a_redis_jti_is_kept_for_exp_plus_leeway_and_a_replay_resets_nothing(
    tmp_path: Path, keys: Keys, jwks_server: str
) -> None:
    import redis

    url = redis_url()
    app = make_app(tmp_path, keys, jwks_server, REDIS_URL=url)
    jtis = app.extensions["cds-auth"].jtis
    keep_until = time.time() + 40
    jti = str(uuid.uuid4())
    assert jtis.first_use("iss", jti, keep_until)
    conn = redis.Redis.from_url(url)
    key = "cds:jti:" + hashlib.sha256(f"iss|{jti}".encode()).hexdigest()
    before = conn.pttl(key)
    assert before >= 40_000, "kept until exp + leeway, not until exp"
    assert not jtis.first_use("iss", jti, keep_until + 1000), "a replay"
    after = conn.pttl(key)
    assert after <= before, "a replay must not extend the key's life"


def _with_header(bearer: str, header: dict[str, Any]) -> str:
    """The token with its header replaced (the signature no longer matches; the header is what is tested)."""
    import base64

    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return ".".join([encoded, *bearer.split(".")[1:]])


@pytest.mark.parametrize(
    "case",
    [
        "alg a list",
        "alg an object",
        "alg null",
        "kid a list",
        "RS384 kid names the EC key",
        "ES384 kid names the RSA key",
    ],
)
def test_malformed_headers_are_401_not_503(client: FlaskClient, keys: Keys, case: str) -> None:
    """The caller's fault (issue 11.6): 401 with no Retry-After, not 'temporarily unavailable'."""
    aud = f"{BASE}/cds-services"
    good = token(keys, aud)
    bearer = {
        "alg a list": _with_header(good, {"alg": ["RS384"], "kid": "rsa-1", "typ": "JWT"}),
        "alg an object": _with_header(good, {"alg": {"RS384": 1}, "kid": "rsa-1", "typ": "JWT"}),
        "alg null": _with_header(good, {"alg": None, "kid": "rsa-1", "typ": "JWT"}),
        "kid a list": _with_header(good, {"alg": "RS384", "kid": ["rsa-1"], "typ": "JWT"}),
        "RS384 kid names the EC key": token(keys, aud, alg="RS384", kid="ec-1"),
        "ES384 kid names the RSA key": token(keys, aud, alg="ES384", kid="rsa-1"),
    }[case]
    response = get(client, bearer)
    assert response.status_code == 401, case
    assert "Retry-After" not in response.headers
    assert response.get_json()["issue"][0]["diagnostics"] == "Unauthorized"


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_times_given_as_strings_are_refused(client: FlaskClient, keys: Keys, claim: str) -> None:
    """NumericDate is a JSON number (RFC 7519 §2); "1700000000" is not one (issue 11.12)."""
    now = int(time.time())
    value = {"exp": now + 300, "iat": now, "nbf": now - 5}[claim]
    assert get(client, token(keys, f"{BASE}/cds-services", **{claim: value})).status_code == 200
    assert get(client, token(keys, f"{BASE}/cds-services", **{claim: str(value)})).status_code == 401


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_the_bearer_scheme_is_case_insensitive(client: FlaskClient, keys: Keys, scheme: str) -> None:
    """RFC 6750 §2.1 / RFC 7235 §2.1: auth-scheme names are case-insensitive (issue 11.14)."""
    bearer = token(keys, f"{BASE}/cds-services")
    response = client.get("/cds-services", headers={"Authorization": f"{scheme} {bearer}"}, base_url=BASE)
    assert response.status_code == 200
    assert client.get("/cds-services", headers={"Authorization": "Basic abc"}, base_url=BASE).status_code == 401
    assert client.get("/cds-services", headers={"Authorization": "Bearer "}, base_url=BASE).status_code == 401


def test_with_trusted_clients_the_service_must_know_its_own_url(tmp_path: Path, keys: Keys) -> None:
    """Never the Host header (issue 11.7): without PUBLIC_BASE_URL the service refuses to start, saying why."""
    with pytest.raises(ValueError, match="CDS_PUBLIC_BASE_URL"):
        make_app(tmp_path, keys, "http://127.0.0.1:9/jwks", PUBLIC_BASE_URL="")
    with pytest.raises(ValueError, match="CDS_PUBLIC_BASE_URL"):
        make_app(tmp_path, keys, "http://127.0.0.1:9/jwks", PUBLIC_BASE_URL="not a url")


def test_a_token_for_another_service_is_refused_whatever_host_the_caller_sends(tmp_path: Path, keys: Keys) -> None:
    other = "https://other-service.example"
    app = make_app(tmp_path, keys, "http://127.0.0.1:9/jwks", PUBLIC_BASE_URL=f"{BASE}, https://cds.internal.example")
    client = app.test_client()
    stolen = token(keys, f"{other}/cds-services")
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {stolen}"}, base_url=other).status_code == 401
    for public in (BASE, "https://cds.internal.example"):  # either of the service's own URLs
        bearer = token(keys, f"{public}/cds-services")
        assert (
            client.get("/cds-services", headers={"Authorization": f"Bearer {bearer}"}, base_url=other).status_code
            == 200
        )


def test_database_lost_with_jtis_in_redis_is_503_with_retry_after(tmp_path: Path, keys: Keys) -> None:
    """Redis still says the token is new; the records cannot be kept: 503 and Retry-After (issue 11.8)."""
    import sqlalchemy as sa

    app = make_app(tmp_path, keys, "http://127.0.0.1:9/jwks", REDIS_URL=redis_url())
    client = app.test_client()
    store = app.extensions["cds"].store
    store.engine.dispose()
    store.engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:9/gone", connect_args={"connect_timeout": 2})
    body = json.loads((Path(__file__).resolve().parent.parent / "examples" / "order-sign-mri.json").read_text())
    for method, path, payload in [
        ("POST", "/cds-services/crd-order-sign", body),
        ("GET", "/determinations/ca-x", None),
    ]:
        bearer = token(keys, f"{BASE}{path}")
        headers = {"Authorization": f"Bearer {bearer}"}
        response = client.open(path, method=method, json=payload, base_url=BASE, headers=headers)
        assert response.status_code == 503, (path, response.status_code)
        assert response.headers["Retry-After"]
        assert response.get_json()["resourceType"] == "OperationOutcome"


def _assertion_ids(payload: dict[str, Any]) -> list[str]:
    text = json.dumps(payload)
    return sorted(set(__import__("re").findall(r"ca-[0-9a-f]{32}", text)))


def test_a_decision_page_is_for_the_client_that_asked(client: FlaskClient, keys: Keys, jwks_server: str) -> None:
    """Another trusted client cannot read it with its own token (issue 11.10); the asking client can."""
    body = json.loads((Path(__file__).resolve().parent.parent / "examples" / "order-sign-mri.json").read_text())
    bearer = token(keys, f"{BASE}/cds-services/crd-order-sign")
    payload = client.post(
        "/cds-services/crd-order-sign", json=body, base_url=BASE, headers={"Authorization": f"Bearer {bearer}"}
    ).get_json()
    (assertion_id,) = _assertion_ids(payload)
    path = f"/determinations/{assertion_id}"
    mine = token(keys, f"{BASE}{path}")
    assert client.get(path, base_url=BASE, headers={"Authorization": f"Bearer {mine}"}).status_code == 200
    other = token(keys, f"{BASE}{path}", iss=SANDBOX, alg="ES384", headers={"jku": jwks_server})
    assert client.get(path, base_url=BASE, headers={"Authorization": f"Bearer {other}"}).status_code == 404


def test_assertion_ids_cannot_be_computed_from_the_request(tmp_path: Path, keys: Keys) -> None:
    """Same request, two deployments: two ids; the same deployment asked twice: the same id (issue 11.10)."""
    body = json.loads((Path(__file__).resolve().parent.parent / "examples" / "order-sign-mri.json").read_text())
    ids = []
    for name in ("one", "two", "one"):
        (tmp_path / name).mkdir(exist_ok=True)
        app = create_app({"AUTH_REQUIRED": False, "DATABASE_URL": f"sqlite:///{tmp_path / name / 'db.sqlite'}"})
        ids.append(_assertion_ids(app.test_client().post("/cds-services/crd-order-sign", json=body).get_json()))
        app.extensions["cds"].store.close()
    assert ids[0] and ids[0] != ids[1], "another deployment's id is not predictable"
    assert ids[0] == ids[2], "stable for one deployment (a repeat keeps its assertion and number)"


def _package(client: FlaskClient, keys: Keys, params: dict[str, Any], **who: Any) -> Any:
    path = "/fhir/Questionnaire/$questionnaire-package"
    bearer = token(keys, f"{BASE}/fhir/Questionnaire/$questionnaire-package", **who)
    return client.post(path, json=params, base_url=BASE, headers={"Authorization": f"Bearer {bearer}"})


def test_a_decisions_prefilled_questionnaire_is_for_the_client_that_asked(
    client: FlaskClient, keys: Keys, jwks_server: str
) -> None:
    """The package pre-fills from a kept decision (patient data): another client gets the blank form, and
    the adaptive form of that decision is unknown to it, as the decision page is (issue 11.10)."""
    body = json.loads((Path(__file__).resolve().parent.parent / "examples" / "order-sign-mri.json").read_text())
    bearer = token(keys, f"{BASE}/cds-services/crd-order-sign")
    headers = {"Authorization": f"Bearer {bearer}"}
    payload = client.post("/cds-services/crd-order-sign", json=body, base_url=BASE, headers=headers).get_json()
    order = payload["systemActions"][0]["resource"]
    coverage = next(e["resource"] for e in body["prefetch"]["coverage"]["entry"])
    params = {"resourceType": "Parameters", "parameter": [{"name": "coverage", "resource": coverage}]}
    params["parameter"].append({"name": "order", "resource": order})
    other = {"iss": SANDBOX, "alg": "ES384", "headers": {"jku": jwks_server}}

    def resources(response: Any) -> list[dict[str, Any]]:
        assert response.status_code == 200, response.get_json()
        bundles = [p["resource"] for p in response.get_json()["parameter"]]
        return [e["resource"] for b in bundles for e in b["entry"]]

    def entries(response: Any) -> list[str]:
        return [r["resourceType"] for r in resources(response)]

    mine = resources(_package(client, keys, params))
    assert "QuestionnaireResponse" in [r["resourceType"] for r in mine], "the asking client gets its pre-fill"
    assert _package(client, keys, params, **other).status_code == 404, "chosen by a decision it may not read"
    canonical = next(f"{r['url']}|{r['version']}" for r in mine if r["resourceType"] == "Questionnaire")
    params["parameter"].append({"name": "questionnaire", "valueCanonical": canonical})
    assert entries(_package(client, keys, params, **other)) == ["Questionnaire"], "the blank form, nothing pre-filled"
