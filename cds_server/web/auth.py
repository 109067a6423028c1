"""Who is calling: CDS Hooks client authentication with signed JWTs (cds-hooks-crd.md §1.9).

Every protected request carries ``Authorization: Bearer <JWT>`` signed with an
asymmetric key (ES384 or RS384 by default; never ``none``, never HMAC). The
issuer must be a trusted client; its key comes from the JWKS configured for it
(inline or in a file) or from its ``jku`` URL when that URL is on the client's
allow-list (fetched, cached and refreshed). ``aud`` must be the exact URL of
the endpoint called, ``exp``/``iat`` must be sane, and a ``jti`` is accepted
once across every worker and instance (kept in the database, or in Redis).
Any failure answers 401 with no detail; tokens are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import requests
import sqlalchemy as sa

from cds_server.records.store import Store, jti_seen
from cds_server.urls import http_url_problem, public_base_urls
from cds_server.web.wire import json_response

log = logging.getLogger(__name__)
ASYMMETRIC = {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}


class Unauthorized(Exception):
    """The request is not authenticated; ``reason`` is for the log only, never for the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class TrustedClient:
    """A CDS client: its issuer, its keys (a JWKS) and/or the ``jku`` URLs it may point to."""

    issuer: str
    jwks: dict[str, Any] | None = None
    jku: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()


def load_clients(config: Any) -> dict[str, TrustedClient]:
    """Read TRUSTED_CLIENTS: a list of {iss, jwks | jwks_file, jku: [...], tenants: [...]}."""
    clients: dict[str, TrustedClient] = {}
    for i, raw in enumerate(config or []):
        if not isinstance(raw, Mapping) or not isinstance(raw.get("iss"), str):
            raise ValueError(f"TRUSTED_CLIENTS[{i}] needs an 'iss'")
        jwks = raw.get("jwks")
        if raw.get("jwks_file"):
            jwks = json.loads(Path(raw["jwks_file"]).read_text(encoding="utf-8"))
        if jwks is not None and not isinstance(jwks.get("keys"), list):
            raise ValueError(f"TRUSTED_CLIENTS[{i}] jwks must be a JWK Set with 'keys'")
        jku = raw.get("jku") or []
        jku = (jku,) if isinstance(jku, str) else tuple(jku)
        if jwks is None and not jku:
            raise ValueError(f"TRUSTED_CLIENTS[{i}] needs jwks, jwks_file or jku")
        clients[raw["iss"]] = TrustedClient(raw["iss"], jwks, jku, tuple(raw.get("tenants") or ()))
    return clients


@dataclass
class JwksCache:
    """JWK Sets fetched from allow-listed ``jku`` URLs, kept for ``ttl`` seconds, refreshed on an unknown kid."""

    session: requests.Session
    ttl: float
    timeout: float
    _sets: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def key(self, url: str, kid: str) -> Any:
        found = self._find(self._get(url, refresh=False), kid)
        if found is None:
            fetched_at, _ = self._sets.get(url, (0.0, {}))
            if time.monotonic() - fetched_at > 10:  # at most one refresh per 10 s per URL (key rotation)
                found = self._find(self._get(url, refresh=True), kid)
        if found is None:
            raise Unauthorized("kid not in the jku JWK Set")
        return found

    def _get(self, url: str, refresh: bool) -> dict[str, Any]:
        with self._lock:
            cached = self._sets.get(url)
            if cached and not refresh and time.monotonic() - cached[0] < self.ttl:
                return cached[1]
        try:
            response = self.session.get(url, timeout=self.timeout, allow_redirects=False)
            body = response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError) as exc:
            raise Unauthorized(f"jku fetch failed: {type(exc).__name__}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
            raise Unauthorized("jku did not return a JWK Set")
        with self._lock:
            self._sets[url] = (time.monotonic(), body)
        return body

    @staticmethod
    def _find(jwks: Mapping[str, Any], kid: str) -> Any:
        return find_key(jwks, kid)


def find_key(jwks: Mapping[str, Any], kid: str) -> Any:
    """Return the public key with this kid from a JWK Set, or None.

    Key objects are kept per JWK Set object and kid (``_KEYS``): building one from its JWK costs about
    as much as verifying a signature. A refreshed ``jku`` set is a new object, so a rotated key is
    never served from an old entry; an unusable JWK is not kept and is refused each time.
    """
    cache_key = (id(jwks), kid)
    cached = _KEYS.get(cache_key)
    if cached is not None and cached[0] is jwks:
        return cached[1]
    for raw in jwks.get("keys") or []:
        if isinstance(raw, Mapping) and raw.get("kid") == kid:
            try:
                key = jwt.PyJWK.from_dict(dict(raw)).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
                raise Unauthorized("unusable JWK") from exc
            if len(_KEYS) >= 256:  # bounded: a jku set refreshed many times leaves old entries behind
                _KEYS.clear()
            _KEYS[cache_key] = (jwks, key)
            return key
    return None


_KEYS: dict[tuple[int, str], tuple[Mapping[str, Any], Any]] = {}  # (id(jwks), kid) -> (that jwks, its key)


class JtiStore:
    """Remembers every jti until no check could accept its token any more, shared by all workers and instances.

    That moment is ``exp + leeway`` (PyJWT accepts an expired token for ``leeway`` seconds), not
    ``exp``: forgetting a jti earlier reopens a replay window. A replay changes nothing stored
    (Redis ``SET NX``; a database insert that fails on the key), so it cannot extend or reset it.
    """

    def __init__(self, store: Store, redis_url: str | None) -> None:
        self.store = store
        self.redis = None
        if redis_url:
            import redis

            self.redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    def first_use(self, issuer: str, jti: str, keep_until: float) -> bool:
        """Return True the first time this (issuer, jti) is seen, False on any replay.

        ``keep_until`` is the last instant (epoch seconds) the token could still be accepted.
        """
        # A digest, not a cut: two long jtis sharing a prefix must stay two tokens.
        key = hashlib.sha256(f"{issuer}|{jti}".encode("utf-8", "surrogatepass")).hexdigest()
        if self.redis is not None:
            ttl_ms = max(1000, math.ceil((keep_until - time.time()) * 1000) + 1000)  # a second to spare
            return bool(self.redis.set(f"cds:jti:{key}", "1", nx=True, px=ttl_ms))
        try:
            with self.store.engine.begin() as conn:
                conn.execute(_JTI_INSERT, {"key": key, "expires_at": keep_until})  # built once: cheaper
                if hash(key) % 50 == 0:  # now and then, forget tokens no check can accept any more
                    conn.execute(jti_seen.delete().where(jti_seen.c.expires_at < time.time() - 60))
        except sa.exc.IntegrityError:
            return False
        return True


_JTI_INSERT = jti_seen.insert()


@dataclass
class Authenticator:
    """Checks one bearer token for one endpoint URL."""

    clients: dict[str, TrustedClient]
    jwks_cache: JwksCache
    jtis: JtiStore
    algorithms: frozenset[str]
    leeway: float
    max_lifetime: float

    def check(self, authorization: str | None, audience: str | list[str]) -> dict[str, Any]:
        """Return the verified claims.

        :raises Unauthorized: with an internal reason (never shown to the caller).
        """
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():  # the scheme is case-insensitive (RFC 6750 §2.1)
            raise Unauthorized("no bearer token")
        token = token.strip()
        try:
            claims = self._claims(token, audience)
        except Unauthorized:
            raise
        except Exception as exc:  # a header or claim of the wrong shape is the caller's fault: 401, not 503
            raise Unauthorized(f"malformed token: {type(exc).__name__}") from exc
        if not self.jtis.first_use(client_issuer(claims), str(claims["jti"]), float(claims["exp"]) + self.leeway):
            raise Unauthorized("jti replayed")
        return claims

    def _claims(self, token: str, audience: str | list[str]) -> dict[str, Any]:
        """Verify everything but the jti; only the replay store can fail for reasons not the caller's."""
        header, unverified = _unverified(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms or alg not in ASYMMETRIC:
            raise Unauthorized(f"algorithm {alg!r} not allowed")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("no kid")
        if header.get("typ") != "JWT":
            raise Unauthorized("typ is not JWT")
        client = self.clients.get(str(unverified.get("iss")))
        if client is None:
            raise Unauthorized("issuer not trusted")
        key = self._key(client, header, kid)
        claims = self._verify(token, key, alg, audience, client.issuer)
        if client.tenants and claims.get("tenant") not in client.tenants:
            raise Unauthorized("tenant not allowed")
        return claims

    def _key(self, client: TrustedClient, header: Mapping[str, Any], kid: str) -> Any:
        """A configured key wins (a ``jku`` header is then only a hint); else an allow-listed ``jku``.

        Inferno sends ``jku`` pointing at its own session URL; a payer that saved that JWK Set
        in ``jwks_file`` already trusts the key and need not allow-list every session URL.
        An unlisted ``jku`` is never fetched.
        """
        configured = find_key(client.jwks, kid) if client.jwks is not None else None
        if configured is not None:
            return configured
        jku = header.get("jku")
        if isinstance(jku, str) and jku:
            if jku not in client.jku:
                raise Unauthorized("jku not on the allow-list")
            return self.jwks_cache.key(jku, kid)
        raise Unauthorized("kid not in the configured JWKS" if client.jwks is not None else "no jku, no JWKS")

    def _verify(self, token: str, key: Any, alg: str, audience: str | list[str], issuer: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer,
                leeway=self.leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"verification failed: {type(exc).__name__}") from exc
        for name in ("exp", "iat", "nbf"):  # NumericDate (RFC 7519 §2): PyJWT would take "123" too
            if name in claims and (isinstance(claims[name], bool) or not isinstance(claims[name], (int, float))):
                raise Unauthorized(f"{name} is not a number")
        now = time.time()
        if float(claims["iat"]) > now + self.leeway:
            raise Unauthorized("iat in the future")
        if float(claims["exp"]) - float(claims["iat"]) > self.max_lifetime:
            raise Unauthorized("token lives too long")
        return claims


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims as the token states them, only to pick the client and its key.

    A plain split and decode: ``_verify`` then has PyJWT parse the token strictly, check the
    signature with that key and every claim, and refuses whatever this reading got wrong (a
    header it reads otherwise names another algorithm; claims it reads otherwise do not verify).
    PyJWT's own unverified parse cost as much again as that check's parsing.
    """
    try:
        header_part, payload_part, _ = token.split(".")
        header, payload = json.loads(_b64url(header_part)), json.loads(_b64url(payload_part))
    except ValueError as exc:  # not three parts, not base64url, not JSON (binascii.Error is a ValueError)
        raise Unauthorized("not a JWT") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise Unauthorized("not a JWT")
    return header, payload


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def build_authenticator(settings: Mapping[str, Any], store: Store, session: requests.Session) -> Authenticator:
    """Make the authenticator from settings (TRUSTED_CLIENTS, REDIS_URL, ...)."""
    return Authenticator(
        clients=load_clients(settings["TRUSTED_CLIENTS"]),
        jwks_cache=JwksCache(session, float(settings["JWKS_CACHE_SECONDS"]), float(settings["FHIR_TIMEOUT_SECONDS"])),
        jtis=JtiStore(store, settings.get("REDIS_URL") or None),
        algorithms=frozenset(settings["JWT_ALGORITHMS"]),
        leeway=float(settings["JWT_LEEWAY_SECONDS"]),
        max_lifetime=float(settings["JWT_MAX_LIFETIME_SECONDS"]),
    )


def require_public_url(settings: Mapping[str, Any]) -> None:
    """With authentication on and outside clients trusted, the service must know its own URL(s).

    The JWT audience is checked against it; taken from the request it would come from the
    ``Host`` header, which the caller chooses, so a token minted for another service would pass.

    :raises ValueError: PUBLIC_BASE_URL is missing or not an absolute http(s) URL.
    """
    if not settings["AUTH_REQUIRED"] or not settings["TRUSTED_CLIENTS"]:
        return
    bases = public_base_urls(settings.get("PUBLIC_BASE_URL"))
    if not bases:
        raise ValueError(
            "CDS_PUBLIC_BASE_URL must be set when client authentication is on: JWT audiences are checked "
            "against the service's own public URL(s), never against the Host header a caller sends "
            "(e.g. CDS_PUBLIC_BASE_URL=https://cds.payer.example, or a JSON list of URLs)"
        )
    for base in bases:
        problem = http_url_problem(base)
        if problem:
            raise ValueError(f"CDS_PUBLIC_BASE_URL: each URL {problem}")


def client_issuer(claims: Mapping[str, Any]) -> str:
    """The verified issuer (``iss`` was checked to be a trusted client's)."""
    return str(claims["iss"])


PROTECTED = ("/cds-services", "/fhir", "/determinations")


def guard() -> Any:
    """Flask before-request hook: authenticate protected endpoints (401 with no detail on failure)."""
    from flask import current_app, g, request

    from cds_server.errors import Issue, operation_outcome

    if request.method == "OPTIONS" or not request.path.startswith(PROTECTED):
        return None
    if not current_app.config["AUTH_REQUIRED"]:
        return None
    if _signed_decision_link(request, current_app.extensions["cds"].link_secret):
        return None
    bases = public_base_urls(current_app.config.get("PUBLIC_BASE_URL"))
    # No configured URL only when no outside client is trusted (create_app refuses to start otherwise):
    # the only tokens that can pass are the local demo bench's own, minted for the URL the browser used.
    audience: str | list[str] = [f"{b}{request.path}" for b in bases] if bases else request.base_url
    try:
        g.client = current_app.extensions["cds-auth"].check(request.headers.get("Authorization"), audience)
    except Unauthorized as exc:
        log.info("authentication failed: %s", exc.reason, extra={"request_id": g.get("request_id")})
        response = json_response(operation_outcome([Issue("Unauthorized")], "login"), 401)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    except Exception:  # the replay store (database or Redis) is down: fail closed, and say it is temporary
        log.exception("authentication could not be checked", extra={"request_id": g.get("request_id")})
        response = json_response(
            operation_outcome([Issue("Authentication is temporarily unavailable")], "transient"), 503
        )
        response.headers["Retry-After"] = "5"
        return response
    return None


def _signed_decision_link(request: Any, secret: str | None) -> bool:
    """A GET of ``/determinations/{id}`` carrying a valid signature for that id (see ``cds_server.links``)."""
    from urllib.parse import unquote

    from cds_server.links import valid

    prefix = "/determinations/"
    if request.method != "GET" or not request.path.startswith(prefix):
        return False
    assertion_id = unquote(request.path[len(prefix) :])
    return valid(secret, assertion_id, request.args.get("exp"), request.args.get("sig"))


def readable_by_caller(stored: dict[str, Any]) -> bool:
    """A kept decision (its page, its pre-filled questionnaire) is for the client that asked, or its tenant.

    A signed link from a card opens that decision without a token (``auth.guard``); with a token,
    the token's issuer (or tenant) must be the one recorded with the decision. With
    authentication off (a demo) every caller is trusted.
    """
    from flask import current_app, g

    client = g.get("client")
    if not current_app.config["AUTH_REQUIRED"] or client is None:
        return True
    if stored.get("client_iss") and stored["client_iss"] == client.get("iss"):
        return True
    tenant = stored.get("client_tenant")
    return bool(tenant) and tenant == client.get("tenant")
