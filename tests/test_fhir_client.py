"""The FHIR client's transport: the session's connection pool, the headers sent, no cookies kept, failures named."""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from cds_server.pipeline.fhir_client import FhirClient, FhirError

PATIENT = {"resourceType": "Patient", "id": "p"}


@dataclass
class KeepAliveFhir:
    """An HTTP/1.1 loopback server keeping connections open: it counts them and logs each request's headers."""

    port: int
    connections: list[str] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"


@pytest.fixture
def keep_alive() -> Iterator[KeepAliveFhir]:
    state = KeepAliveFhir(0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            state.connections.append(str(self.client_address))

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            state.requests.append({k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
            body = json.dumps(PATIENT).encode()
            headers = {"Content-Type": "application/fhir+json", "Set-Cookie": "route=ehr-a; Path=/"}
            if "/big/" in self.path:  # larger than the client's cap, no Content-Length: read until cut off
                body = b'{"resourceType": "Patient", "id": "p"' + b" " * 50_000 + b"}"
                headers["Connection"] = "close"
            elif "/gzip/" in self.path:
                body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
            if "/slow/" in self.path:
                time.sleep(0.5)
            self.send_response(200)
            for name, value in headers.items():
                self.send_header(name, value)
            if "/big/" not in self.path:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


def pooled_session() -> requests.Session:
    """A session as the service builds it (web/app.py): a pool, no retries, no environment proxy."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=6, pool_maxsize=6, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False
    return session


def client_for(session: requests.Session, base: str, **options: Any) -> FhirClient:
    return FhirClient(session, base, "token-1", 2.0, 5, 100, time.monotonic() + 10, **options)


def test_reads_share_one_pooled_connection_and_send_the_same_headers_as_before(keep_alive: KeepAliveFhir) -> None:
    client = client_for(pooled_session(), keep_alive.base)
    for _ in range(5):
        assert client.read("Patient/p") == PATIENT
    assert len(keep_alive.connections) == 1, "the connection goes back to the pool after each read"
    sent = keep_alive.requests[-1]
    assert sent["path"] == "/fhir/Patient/p"
    assert sent["authorization"] == "Bearer token-1" and sent["accept"] == "application/fhir+json"
    assert sent["user-agent"].startswith("python-requests/") and "gzip" in sent["accept-encoding"]


def test_a_cookie_a_fhir_server_sets_is_not_sent_back(keep_alive: KeepAliveFhir) -> None:
    """One session serves every call and every EHR: what one server set must not travel with later reads."""
    session = pooled_session()
    client_for(session, keep_alive.base).read("Patient/p")
    client_for(session, keep_alive.base).read("Patient/p")
    assert all("cookie" not in sent for sent in keep_alive.requests), keep_alive.requests


def test_a_compressed_answer_is_decoded(keep_alive: KeepAliveFhir) -> None:
    assert client_for(pooled_session(), keep_alive.base + "/gzip").read("Patient/p") == PATIENT


def test_an_answer_cut_short_does_not_spoil_the_pooled_connection(keep_alive: KeepAliveFhir) -> None:
    session = pooled_session()
    with pytest.raises(FhirError, match="larger than"):
        client_for(session, keep_alive.base + "/big", max_bytes=10_000).read("Patient/p")
    for _ in range(3):
        assert client_for(session, keep_alive.base).read("Patient/p") == PATIENT


def test_failures_keep_the_names_requests_gave_them(keep_alive: KeepAliveFhir) -> None:
    """The reason a history could not be read is shown in the cards: the same words as before."""
    with pytest.raises(FhirError, match=r"^ConnectionError reading Patient/p$"):
        client_for(pooled_session(), "http://127.0.0.1:9/fhir").read("Patient/p")
    slow = FhirClient(pooled_session(), keep_alive.base + "/slow", None, 0.2, 5, 100, time.monotonic() + 10)
    with pytest.raises(FhirError, match=r"^ReadTimeout reading Patient/p$"):
        slow.read("Patient/p")


def test_an_adapter_of_its_own_is_used_instead_of_the_pool(keep_alive: KeepAliveFhir) -> None:
    """A transport mounted on the session (a test double, a deployment's own) still decides how to send."""

    class Refusing(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            raise requests.ConnectionError("refused by the mounted adapter")

    session = pooled_session()
    session.mount("http://", Refusing())
    with pytest.raises(FhirError, match="ConnectionError"):
        client_for(session, keep_alive.base).read("Patient/p")
    assert keep_alive.requests == [], "nothing reached the server"


def test_an_adapter_of_its_own_that_answers_is_read_like_the_pool(keep_alive: KeepAliveFhir) -> None:
    sent: list[str] = []

    class Counting(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            sent.append(request.url)
            return super().send(request, *args, **kwargs)

    session = pooled_session()
    session.mount("http://", Counting())
    client = client_for(session, keep_alive.base)
    assert client.read("Patient/p") == PATIENT and client.read("Patient/p") == PATIENT
    assert sent == [keep_alive.base + "/Patient/p"] * 2
    assert keep_alive.requests[-1]["authorization"] == "Bearer token-1"
