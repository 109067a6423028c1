"""The test bench (``/demo``): a small EHR plus a CDS Hooks sandbox, served by the service itself.

Only registered when ``DEMO_ENABLED`` is true (``make serve`` turns it on).
When client authentication is on, the bench signs its calls like a real
client: the service trusts a demo issuer whose ES384 key is kept in
``DEMO_KEY_FILE`` (made on first start, shared by every worker), and
``POST /demo/token`` mints a short-lived token for the endpoint the page is
about to call, to a browser on the same machine only (loopback). Never enable
the demo on a production endpoint: behind a proxy on the same host every
caller looks local.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Blueprint, Flask, Response, current_app, request, send_from_directory

from cds_server.errors import Issue, ServiceError, UnknownService
from cds_server.scenarios import SCENARIO_DIR, hook_request, iter_scenarios, load_scenario
from cds_server.web.auth import TrustedClient
from cds_server.web.wire import base_url, json_response

DEMO_ISSUER = "urn:cds-server:demo-bench"
STATIC = Path(__file__).parent / "static" / "demo"
demo = Blueprint("demo", __name__, url_prefix="/demo")


class DemoForbidden(ServiceError):
    """A demo token was asked for from another machine."""

    status = 403


def demo_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load the bench's signing key, creating it once (O_EXCL, so concurrent workers agree)."""
    if not path.exists():
        key = ec.generate_private_key(ec.SECP384R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        except FileExistsError:
            pass
    for _ in range(50):
        data = path.read_bytes()
        if data:
            loaded = serialization.load_pem_private_key(data, password=None)
            if isinstance(loaded, ec.EllipticCurvePrivateKey):
                return loaded
        time.sleep(0.05)
    raise RuntimeError(f"demo signing key {path} is unreadable")


def install(app: Flask) -> None:
    """Register the bench, and trust its signing key when authentication is on."""
    key = demo_key(Path(app.config["DEMO_KEY_FILE"]))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())) | {"kid": "demo-bench", "alg": "ES384"}
    app.extensions["cds-demo-key"] = key
    app.extensions["cds-auth"].clients[DEMO_ISSUER] = TrustedClient(DEMO_ISSUER, {"keys": [jwk]})
    app.register_blueprint(demo)


@demo.get("/")
def page() -> Response:
    """The bench page."""
    return send_from_directory(STATIC, "index.html")


@demo.get("/static/<path:name>")
def static_file(name: str) -> Response:
    """The bench's own script and style (no CDN: it works offline)."""
    return send_from_directory(STATIC, name)


@demo.get("/config")
def config() -> Response:
    """What the page needs to know about this service."""
    return json_response(
        {
            "authRequired": bool(current_app.config["AUTH_REQUIRED"]),
            "payer": current_app.config["PAYER_NAME"],
            "baseUrl": base_url(),
        }
    )


@demo.get("/scenarios")
def scenarios() -> Response:
    """The synthetic patients of the scenario library."""
    listed = []
    for scenario in iter_scenarios():
        first = scenario.expect[0]
        listed.append(
            {
                "name": scenario.name,
                "description": scenario.description,
                "service": first.get("service"),
                "outcome": first.get("outcome"),
                "orders": len(scenario.orders),
            }
        )
    return json_response(listed)


@demo.get("/scenarios/<path:name>")
def scenario(name: str) -> Response:
    """An order-sign request for one scenario (everything prefetched)."""
    path = (SCENARIO_DIR / f"{name}.json").resolve()
    if SCENARIO_DIR.resolve() not in path.parents or not path.exists():
        raise UnknownService(f"No scenario {name!r}", [Issue("unknown scenario")])
    return json_response(hook_request(load_scenario(path), hook_instance=str(uuid.uuid4())))


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


@demo.post("/token")
def token() -> Response:
    """A short-lived client JWT for the endpoint the page is about to call: for this machine's browser only.

    Anyone who can mint tokens can call every protected endpoint, so only a caller on
    loopback gets one; from anywhere else the bench works only with authentication off.
    """
    if request.remote_addr not in LOOPBACK:
        raise DemoForbidden(
            "Demo tokens are handed out only to a browser on this machine",
            [Issue("open the bench on the machine that runs the service, or turn authentication off")],
        )
    path = str((request.get_json(silent=True) or {}).get("path") or "")
    if not path.startswith("/"):
        raise UnknownService("Say which path the token is for", [Issue("path must start with /")])
    now = int(time.time())
    claims = {"iss": DEMO_ISSUER, "aud": f"{base_url()}{path}", "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}
    signed = jwt.encode(
        claims, current_app.extensions["cds-demo-key"], algorithm="ES384", headers={"kid": "demo-bench", "typ": "JWT"}
    )
    return json_response({"token": signed})


def page_config(app: Flask) -> dict[str, Any]:
    """For tests: the demo's effective settings."""
    return {"enabled": "demo" in app.blueprints, "key_file": app.config["DEMO_KEY_FILE"]}
