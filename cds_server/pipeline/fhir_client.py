"""Reading the EHR's FHIR server with the hook's access token.

The token goes only to ``fhirServer``: a ``next`` link pointing anywhere else
is not followed. Page following and resource counts are capped, every call
has a timeout, and any failure (timeout, refused connection, an error status,
a body that is not a FHIR resource) is a :class:`FhirError`, never a crash.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3
from requests.adapters import HTTPAdapter

from cds_server.metrics import FHIR_FAILURES, FHIR_LATENCY
from fhir_mappings.codes import arr

FHIR_JSON = "application/fhir+json"


class FhirError(Exception):
    """The FHIR server could not give an answer we can use."""


class _SendFailed(Exception):
    """A request that could not be sent or answered, named as ``requests`` named it (``ConnectionError``,
    ``ConnectTimeout``, ``ReadTimeout``, ``SSLError``, ``ProxyError``) so explanations read as before."""

    def __init__(self, exc: BaseException) -> None:
        errors = urllib3.exceptions
        self.kind = "connection"
        if isinstance(exc, errors.NewConnectionError):
            self.name = "ConnectionError"
        elif isinstance(exc, errors.ConnectTimeoutError):
            self.name, self.kind = "ConnectTimeout", "timeout"
        elif isinstance(exc, errors.ReadTimeoutError):
            self.name, self.kind = "ReadTimeout", "timeout"
        elif isinstance(exc, (errors.SSLError, errors.ProxyError)):
            self.name = type(exc).__name__
        else:  # ProtocolError, a reset or refused socket, anything else urllib3 raises
            self.name = "ConnectionError"
        super().__init__(self.name)


class _Sent:
    """A ``requests.Response`` from an adapter of its own, read as urllib3's response is."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.status = response.status_code
        self.headers = response.headers

    def read1(self, amount: int, decode_content: bool = True) -> bytes:
        chunk: bytes = self.response.raw.read1(amount, decode_content=decode_content)
        return chunk

    def close(self) -> None:
        self.response.close()

    def release_conn(self) -> None:
        self.response.close()


@dataclass
class CircuitBreaker:
    """Stops calling a FHIR server that keeps failing, so one dead EHR cannot tie up the workers.

    After ``threshold`` consecutive failures the circuit opens: calls fail at once
    for ``cooldown`` seconds; then one trial call is let through (half-open), and
    its success closes the circuit again. One breaker per server base URL.
    """

    threshold: int = 5
    cooldown: float = 30.0
    _state: dict[str, tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, server: str) -> bool:
        with self._lock:
            failures, opened_at = self._state.get(server, (0, 0.0))
            if failures < self.threshold:
                return True
            if time.monotonic() - opened_at >= self.cooldown:
                self._state[server] = (self.threshold - 1, opened_at)  # half-open: one trial
                return True
            return False

    def record(self, server: str, ok: bool) -> None:
        with self._lock:
            if ok:
                self._state.pop(server, None)
                return
            failures, _ = self._state.get(server, (0, 0.0))
            self._state[server] = (failures + 1, time.monotonic())


@dataclass
class FhirClient:
    """A client bound to one hook call's ``fhirServer`` and access token."""

    session: requests.Session
    base_url: str
    token: str | None
    timeout: float
    max_pages: int
    max_resources: int
    deadline: float | None = None  # time.monotonic() by which the whole hook call must be done
    breaker: CircuitBreaker | None = None
    max_bytes: int = 10 * 1024 * 1024  # FHIR_MAX_RESPONSE_BYTES: the largest answer read into memory

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/") + "/"

    def remaining(self) -> float:
        """Seconds left of the call's time budget (infinite without a deadline)."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": FHIR_JSON}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _get(self, url: str) -> tuple[int, bytes]:
        """GET ``url``: its status and body, read within the call's deadline and the byte cap."""
        if not url.startswith(self.base_url):
            raise FhirError("refusing to send the access token outside fhirServer")
        budget = min(self.timeout, self.remaining())
        if budget <= 0.05:
            FHIR_FAILURES.labels("budget").inc()
            raise FhirError("the time budget of the hook call is spent")
        if self.breaker is not None and not self.breaker.allow(self.base_url):
            FHIR_FAILURES.labels("circuit-open").inc()
            raise FhirError("the FHIR server keeps failing; not calling it for a while")
        started = time.perf_counter()
        try:
            response = self._send(url, budget)
            status, body = response.status, self._read(response, url, time.monotonic() + budget)
        except _SendFailed as exc:
            self._outcome(False, exc.kind)
            raise FhirError(f"{exc.name} reading {self._show(url)}") from exc.__cause__
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            # urllib3's errors come unwrapped from ``raw``; ValueError: a URL urllib3/idna cannot parse
            self._outcome(False, "timeout" if isinstance(exc, requests.Timeout) else "connection")
            raise FhirError(f"{type(exc).__name__} reading {self._show(url)}") from exc
        finally:
            FHIR_LATENCY.observe(time.perf_counter() - started)
        ok = status < 500
        self._outcome(ok, None if ok else "server-error")
        return status, body

    def _send(self, url: str, budget: float) -> Any:
        """Send the GET through the session's mounted adapter and its connection pool; no redirects, no retry.

        Returns urllib3's response, its body not yet read. ``Session.get`` would cost about 0.3 ms of
        CPU more a read (14 reads a call, under the GIL): merging cookies, environment settings and
        hooks, then building a ``requests.Response``; none of it applies (no proxy from the
        environment, no auth but the token, no hooks). The URL is prepared by requests as before and
        the pool is the one ``HTTPAdapter.send`` would use, with the same TLS settings. An adapter of
        its own (one overriding ``send``) or a session proxy is used through ``adapter.send``. A
        cookie a FHIR server sets is not kept (the session is shared by every call and every EHR).
        """
        session = self.session
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        headers = {**session.headers, **self._headers()}
        adapter = session.get_adapter(prepared.url or url)
        if type(adapter).send is not HTTPAdapter.send or session.proxies:
            prepared.prepare_method("GET")
            prepared.prepare_headers(headers)
            sent = adapter.send(
                prepared, stream=True, timeout=budget, verify=session.verify, cert=session.cert, proxies=session.proxies
            )
            return _Sent(sent)
        pool = adapter.get_connection_with_tls_context(prepared, session.verify, None, session.cert)
        adapter.cert_verify(pool, prepared.url, session.verify, session.cert)
        try:
            return pool.urlopen(
                "GET",
                prepared.path_url,
                headers=headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=False,
                timeout=urllib3.Timeout(connect=budget, read=budget),
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _SendFailed(exc) from exc

    def _read(self, response: Any, url: str, read_by: float) -> bytes:
        """The whole body (:meth:`_body`), the connection back in the pool; closed if not read to its end."""
        try:
            body = self._body(response, url, read_by)
        except BaseException:
            response.close()
            response.release_conn()
            raise
        response.release_conn()
        return body

    def _body(self, response: Any, url: str, read_by: float) -> bytes:
        """Read the body in chunks, giving up at the wall-clock deadline or past ``max_bytes``.

        A per-read timeout alone never trips on a server that sends one byte every half second,
        and a 60 MB answer would be held in memory whole: both end here, as a FhirError.
        """
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            self._outcome(False, "too-large")
            raise FhirError(f"{self._show(url)} is larger than {self.max_bytes} bytes")
        deadline = min(read_by, self.deadline if self.deadline is not None else read_by)
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(16384, decode_content=True):  # one recv: a drip cannot hold it
            size += len(chunk)
            if size > self.max_bytes:
                self._outcome(False, "too-large")
                raise FhirError(f"{self._show(url)} is larger than {self.max_bytes} bytes")
            if time.monotonic() > deadline:
                self._outcome(False, "timeout")
                raise FhirError(f"reading {self._show(url)} did not finish within the time budget")
            chunks.append(chunk)
        return b"".join(chunks)

    def _outcome(self, ok: bool, kind: str | None) -> None:
        if kind:
            FHIR_FAILURES.labels(kind).inc()
        if self.breaker is not None:
            self.breaker.record(self.base_url, ok)

    def _show(self, url: str) -> str:
        return url[len(self.base_url) :] if url.startswith(self.base_url) else "(outside fhirServer)"

    def _json(self, body: bytes, url: str) -> Mapping[str, Any]:
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise FhirError(f"{self._show(url)} did not return JSON") from exc
        if not isinstance(parsed, Mapping) or not isinstance(parsed.get("resourceType"), str):
            raise FhirError(f"{self._show(url)} did not return a FHIR resource")
        return parsed

    def _join(self, path: str) -> str:
        """``urljoin``, whose ``ValueError`` on a malformed URL becomes a FhirError."""
        try:
            return urljoin(self.base_url, path)
        except ValueError as exc:
            raise FhirError("a malformed URL") from exc

    def read(self, path: str) -> Mapping[str, Any] | None:
        """Read one resource (``Type/id``); None when the server says it does not exist."""
        url = self._join(path)
        status, raw = self._get(url)
        if status in (404, 410):
            return None
        if status != 200:
            raise FhirError(f"HTTP {status} reading {path}")
        body = self._json(raw, url)
        if body.get("resourceType") == "OperationOutcome":
            raise FhirError(f"{path} answered with an OperationOutcome")
        return body

    def search(self, query: str) -> list[Mapping[str, Any]]:
        """Run a search and follow ``next`` links up to the page and resource caps."""
        url: str | None = self._join(query)
        resources: list[Mapping[str, Any]] = []
        for _ in range(self.max_pages):
            if url is None:
                return resources
            status, raw = self._get(url)
            if status != 200:
                raise FhirError(f"HTTP {status} searching {query.split('?')[0]}")
            bundle = self._json(raw, url)
            if bundle.get("resourceType") != "Bundle":
                raise FhirError(f"search {query.split('?')[0]} did not return a Bundle")
            resources.extend(page_resources(bundle))
            if len(resources) > self.max_resources:
                raise FhirError(f"search {query.split('?')[0]} returned more than {self.max_resources} resources")
            url = next_link(bundle)
        if url is not None:
            raise FhirError(f"search {query.split('?')[0]} has more than {self.max_pages} pages")
        return resources

    def continue_bundle(self, bundle: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """Return a (prefetched) Bundle's resources plus those of its further pages."""
        resources = list(page_resources(bundle))
        url = next_link(bundle)
        if url is None:
            return resources
        rest = self.search(url[len(self.base_url) :] if url.startswith(self.base_url) else url)
        return resources + rest


def page_resources(bundle: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Return the resources of a Bundle page, skipping OperationOutcome search notes."""
    out = []
    for entry in arr(bundle.get("entry")):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, Mapping) and resource.get("resourceType") != "OperationOutcome":
            out.append(resource)
    return out


def next_link(bundle: Mapping[str, Any]) -> str | None:
    """Return the ``next`` page URL of a Bundle, if any."""
    for link in arr(bundle.get("link")):
        if isinstance(link, Mapping) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None
