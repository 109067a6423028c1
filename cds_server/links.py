"""Decision links a clinician can open: signed, expiring capability URLs for ``/determinations/{id}``.

Cards link to the decision behind them. With client authentication on, that page
needs a JWT, which a clinician's browser never has; so each link carries
``exp`` (a Unix time) and ``sig`` (HMAC-SHA256 over the assertion id and ``exp``
with a secret every worker and instance shares). A page request with a valid,
unexpired signature for exactly that assertion is let through; anything else
still needs a token. The secret is ``LINK_SECRET`` when set, else one made once
and kept in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote


def signature(secret: str, assertion_id: str, expires: int) -> str:
    """The link's signature: hex HMAC-SHA256 of ``assertion_id|expires``."""
    message = f"{assertion_id}|{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def decision_url(base: str, assertion_id: str, secret: str | None, ttl_seconds: int) -> str:
    """The decision page URL; signed when there is a secret."""
    url = f"{base}/determinations/{quote(assertion_id, safe='')}"
    if not secret:
        return url
    expires = int(time.time()) + ttl_seconds
    return f"{url}?exp={expires}&sig={signature(secret, assertion_id, expires)}"


def valid(secret: str | None, assertion_id: str, expires: str | None, sig: str | None) -> bool:
    """True when ``sig`` signs this assertion until ``expires`` and that time has not passed."""
    if not secret or not expires or not sig or not expires.isdigit():
        return False
    if int(expires) < time.time():
        return False
    return hmac.compare_digest(signature(secret, assertion_id, int(expires)), sig)
