"""Client tokens for the benchmarks: one ES384 key, the service settings that trust it, tokens signed up front.

An EHR signs a fresh JWT for every call (CDS Hooks §1.9: unique ``jti``, ``aud`` the endpoint's
exact URL). The benchmarks do the same, but sign every token *before* the measured run, so the
client's signing cost is not charged to the service: the service still verifies each signature,
checks every claim and records each ``jti`` once, as in production.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

BASE_URL = "https://cds.payer.example"  # the service's PUBLIC_BASE_URL in every benchmark
ISSUER = "https://ehr.bench.example"
ALGORITHMS = ("ES384", "RS384")  # what the service accepts by default (JWT_ALGORITHMS)
LIFETIME_SECONDS = 900  # below JWT_MAX_LIFETIME_SECONDS (3600); long enough for any run


@dataclass(frozen=True)
class BenchClient:
    """An EHR the service trusts: its private key and the public JWK Set the service is given."""

    key: Any  # an EC P-384 or RSA 2048 private key
    jwk: dict[str, Any]
    alg: str = "ES384"

    @classmethod
    def new(cls, alg: str = "ES384") -> BenchClient:
        """A new key pair: ES384 (P-384) or RS384 (RSA 2048), the two algorithms EHRs use for CDS Hooks."""
        if alg == "RS384":
            key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())
        else:
            key = ec.generate_private_key(ec.SECP384R1())
            public = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())
        return cls(key, json.loads(public) | {"kid": f"bench-{alg.lower()}", "alg": alg}, alg)

    def trusted_clients(self) -> list[dict[str, Any]]:
        """The service's TRUSTED_CLIENTS setting (inline JWK Set, as a payer configures a known EHR)."""
        return [{"iss": ISSUER, "jwks": {"keys": [self.jwk]}}]

    def app_settings(self, directory: Any, **extra: Any) -> dict[str, Any]:
        """``create_app`` settings in process: authentication on, this client trusted, SQLite in ``directory``."""
        return {
            "AUTH_REQUIRED": True,
            "PUBLIC_BASE_URL": BASE_URL,
            "TRUSTED_CLIENTS": self.trusted_clients(),
            "DATABASE_URL": f"sqlite:///{directory}/bench.sqlite",
            "LOG_LEVEL": "WARNING",
            **extra,
        }

    def settings(self) -> dict[str, str]:
        """The ``CDS_*`` environment that turns authentication on and trusts this client."""
        return {
            "CDS_AUTH_REQUIRED": "true",
            "CDS_PUBLIC_BASE_URL": BASE_URL,
            "CDS_TRUSTED_CLIENTS": json.dumps(self.trusted_clients()),
        }

    def tokens(self, path: str, count: int) -> list[str]:
        """``count`` tokens for ``BASE_URL + path``, each with its own jti, valid for ``LIFETIME_SECONDS``."""
        now = int(time.time())
        header = {"typ": "JWT", "kid": self.jwk["kid"]}
        claims = {"iss": ISSUER, "aud": BASE_URL + path, "iat": now, "exp": now + LIFETIME_SECONDS}
        return [
            jwt.encode(claims | {"jti": str(uuid.uuid4())}, self.key, algorithm=self.alg, headers=header)
            for _ in range(count)
        ]
