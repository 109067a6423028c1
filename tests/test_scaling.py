"""Horizontal scaling and shutdown, for real: gunicorn processes, PostgreSQL, Redis.

Two service instances (several sync workers each) share one PostgreSQL
database and one Redis, as behind a load balancer. Under concurrent load no
invocation record is lost, no authorization number is issued twice, and a
token's jti is accepted once across all of them. A worker asked to stop while
answering finishes the answer and keeps its record.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from cds_server.scenarios import SCENARIO_DIR, hook_request, load_scenario
from tests.conftest import HostileFhir, _postgres_database

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
PUBLIC = "http://cds.test"
ISSUER = "https://ehr.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(env: dict[str, str], workers: int = 3) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [GUNICORN, "--config", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env={**os.environ, **env, "PORT": str(port), "WORKERS": str(workers)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except requests.RequestException:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("gunicorn did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def redis_url() -> str:
    import redis

    url = os.environ.get("CDS_TEST_REDIS", "redis://127.0.0.1:6379/13")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).flushdb()
    except redis.RedisError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required under CI and is not reachable at {url}")
        pytest.skip(f"Redis not reachable at {url}")
    return url


@pytest.fixture
def postgres() -> Iterator[str]:
    yield from _postgres_database()


class Signer:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key())) | {"kid": "k1"}

    def token(self, path: str, jti: str | None = None) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": f"{PUBLIC}{path}",
            "iat": now,
            "exp": now + 120,
            "jti": jti or str(uuid.uuid4()),
        }
        return jwt.encode(claims, self.key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


def order_request(order_id: str) -> dict[str, Any]:
    body = hook_request(load_scenario(SCENARIO_DIR / "mri/met-failed-conservative-care.json"))
    body["context"]["draftOrders"]["entry"][0]["resource"]["id"] = order_id
    return body


def test_two_instances_share_records_numbers_and_jtis(postgres: str, redis_url: str) -> None:
    signer = Signer()
    env = {
        "CDS_DATABASE_URL": postgres,
        "CDS_REDIS_URL": redis_url,
        "CDS_PUBLIC_BASE_URL": PUBLIC,
        "CDS_TRUSTED_CLIENTS": json.dumps([{"iss": ISSUER, "jwks": {"keys": [signer.jwk]}}]),
        "CDS_LOG_LEVEL": "WARNING",
    }
    (a, base_a), (b, base_b) = start(env), start(env)
    path = "/cds-services/crd-order-sign"
    try:
        jobs = [(base_a if i % 2 else base_b, order_request(f"sr-{i}" if i < 30 else "sr-shared")) for i in range(50)]

        def call(job: tuple[str, dict[str, Any]]) -> requests.Response:
            base, body = job
            return requests.post(
                base + path, json=body, timeout=30, headers={"Authorization": f"Bearer {signer.token(path)}"}
            )

        with ThreadPoolExecutor(max_workers=12) as pool:
            responses = list(pool.map(call, jobs))
        assert [r.status_code for r in responses] == [200] * 50
        numbers = [_pa(r.json()) for r in responses]
        assert len(set(numbers[:30])) == 30, "every distinct order got its own authorization number"
        assert len(set(numbers[30:])) == 1, "the same order, coverage and decision kept one number"
        assert not set(numbers[:30]) & set(numbers[30:])

        replays = [signer.token(path) for _ in range(10)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            attempts = list(
                pool.map(
                    lambda t: (
                        t,
                        requests.post(
                            (base_a if hash(t) % 2 else base_b) + path,
                            json=order_request("sr-replay"),
                            timeout=30,
                            headers={"Authorization": f"Bearer {t}"},
                        ),
                    ),
                    [t for t in replays for _ in range(3)],
                )
            )
        accepted = [t for t, r in attempts if r.status_code == 200]
        assert sorted(accepted) == sorted(replays), "each jti accepted exactly once across both instances"
        assert all(r.status_code in (200, 401) for _, r in attempts)
    finally:
        stop(a)
        stop(b)
    engine = sa.create_engine(postgres)
    with engine.connect() as conn:
        invocations = conn.execute(sa.text("select count(*) from invocations")).scalar()
        issued = conn.execute(sa.text("select count(*), count(distinct pa_id) from authorizations")).one()
    engine.dispose()
    assert invocations == 60, "no invocation record lost"
    assert issued[0] == issued[1] == 32


def _pa(payload: dict[str, Any]) -> str:
    ext = payload["systemActions"][0]["resource"]["extension"][-1]
    return next(p["valueString"] for p in ext["extension"] if p["url"] == "satisfied-pa-id")


def test_stopping_a_worker_finishes_the_answer_and_keeps_the_record(tmp_path: Path, hostile_fhir: HostileFhir) -> None:
    database = tmp_path / "graceful.sqlite"
    process, base = start(
        {
            "CDS_DATABASE_URL": f"sqlite:///{database}",
            "CDS_AUTH_REQUIRED": "false",
            "CDS_CALL_BUDGET_SECONDS": "4",
            "CDS_LOG_LEVEL": "WARNING",
            "GRACEFUL_TIMEOUT": "15",
        },
        workers=1,
    )
    body = order_request("sr-graceful")
    body["prefetch"] = {k: v for k, v in body["prefetch"].items() if k in ("coverage", "patient")}
    body["fhirServer"] = hostile_fhir.base("slow/1500")
    body["fhirAuthorization"] = {
        "access_token": "t",
        "token_type": "Bearer",
        "expires_in": 30,
        "scope": "s",
        "subject": "c",
    }
    result: dict[str, Any] = {}

    def call() -> None:
        result["response"] = requests.post(f"{base}/cds-services/crd-order-sign", json=body, timeout=30)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.6)  # the worker is now waiting on the slow FHIR server
    process.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    process.wait(timeout=30)
    assert result["response"].status_code == 200, "the in-flight answer was finished, not cut"
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from invocations")).scalar() == 1
    engine.dispose()


def test_half_open_connections_do_not_stall_a_gthread_instance(tmp_path: Path) -> None:
    """Three connections that send nothing (issue 11.9): with WORKER_CLASS=gthread a real call still gets through."""
    env = {
        "CDS_AUTH_REQUIRED": "false",
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'slow.sqlite'}",
        "WORKER_CLASS": "gthread",
        "THREADS": "8",
    }
    process, base = start(env, workers=1)
    host, port = base.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(3)]
    try:
        for conn in idle:
            conn.sendall(b"POST /cds-services/crd-order-sign HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        started = time.monotonic()
        assert requests.get(f"{base}/cds-services", timeout=10).status_code == 200
        assert time.monotonic() - started < 2.0
    finally:
        for conn in idle:
            conn.close()
        stop(process)


def test_gunicorn_bounds_request_lines_and_headers() -> None:
    """The documented limits (docs/security.md) are the configured ones (issue 11.13)."""
    text = (ROOT / "gunicorn.conf.py").read_text()
    for setting in ("limit_request_line = 8190", "limit_request_field_size = 8190", "limit_request_fields = 100"):
        assert setting in text
    assert "limit_request_field_size" in (ROOT / "docs" / "security.md").read_text()


def test_a_worker_freezes_what_the_loaded_app_holds_and_collects_the_young_less_often(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """gunicorn.conf.py's post_worker_init (docs/performance.md, garbage collection); GC_THRESHOLD overrides."""
    import gc
    import importlib.util

    before = gc.get_threshold()
    monkeypatch.setenv("GC_THRESHOLD", "12345,11,12")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # loading the config must not set it for the tests
    spec = importlib.util.spec_from_file_location("gunicorn_conf_probe", ROOT / "gunicorn.conf.py")
    assert spec and spec.loader
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    try:
        conf.post_worker_init(None)
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == (12345, 11, 12)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
