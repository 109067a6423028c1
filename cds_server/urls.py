"""Client-supplied URLs (``fhirServer``): checked up front, so none reaches a library that can raise.

``urllib.parse`` raises ``ValueError`` on an unclosed IPv6 bracket or a bad port, and
``requests``/``idna`` refuse hosts that ``urlsplit`` lets through. A URL that any of them
would refuse is the caller's mistake (400), found before the call does any work.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import requests

MAX_URL_LENGTH = 2048


def http_url_problem(value: object) -> str | None:
    """Return why ``value`` is not an absolute http(s) URL we can call, or None when it is.

    The reason names the rule only, never the value (it may carry a token or a name).
    """
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a port that is not a number in range
        host = parts.hostname
    except ValueError:
        return "is not a well-formed URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an absolute http or https URL"
    if not host or not _valid_host(host, bracketed=parts.netloc.rpartition("@")[2].startswith("[")):
        return "must name a valid host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if parts.fragment or port == 0:
        return "must not have a fragment or port 0"
    try:  # what the HTTP client will do with it: it must not raise later, in the middle of the call
        requests.Request("GET", value.rstrip("/") + "/Patient").prepare()
    except Exception:
        return "is not a URL the service can call"
    return None


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _valid_host(host: str, bracketed: bool) -> bool:
    """An IP literal, or DNS labels of 1-63 letters, digits and inner hyphens (IDNA for the rest)."""
    if bracketed:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            return False
        return True
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.rstrip(".").split(".")
    return len(ascii_host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def public_base_urls(value: Any) -> list[str]:
    """The service's own public base URL(s): a list, or a string of URLs separated by commas or spaces."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value or [])
    return [str(item).strip().rstrip("/") for item in items if str(item).strip()]
