"""CORS for browser clients such as the CDS Hooks sandbox (cds-hooks-crd.md §1.10, checklist 156-158).

Off unless ``CORS_ORIGINS`` lists origins (or ``*``). Preflight requests are
answered without authentication, as browsers send them without credentials.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Response, request

ALLOWED_PATHS = ("/cds-services", "/fhir", "/determinations")


def install(app: Flask) -> None:
    """Answer preflights and add CORS headers for the allowed origins."""

    origins = parse_origins(app.config["CORS_ORIGINS"])

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin")
        if not origin or not request.path.startswith(ALLOWED_PATHS):
            return None
        if "*" in origins:
            return "*"
        return origin if origin in origins else None

    @app.before_request
    def preflight() -> Response | None:
        if request.method != "OPTIONS" or allowed_origin() is None:
            return None
        response = Response(status=204)
        return _headers(response, allowed_origin() or "")

    @app.after_request
    def cors(response: Response) -> Response:
        origin = allowed_origin()
        return _headers(response, origin) if origin else response

    # Run the preflight answer before authentication and every other before-request hook.
    app.before_request_funcs.setdefault(None, []).insert(0, app.before_request_funcs[None].pop())


def parse_origins(value: Any) -> frozenset[str]:
    """The exact origins allowed: a list, or a string of origins separated by commas or spaces.

    A plain string (``CDS_CORS_ORIGINS=https://a.example``) is a list of one, never a string to
    search in: ``origin in "http://127.0.0.1:8383"`` would allow ``http://127.0.0.1:83`` and ``h``.
    """
    items = re.split(r"[\s,]+", value) if isinstance(value, str) else list(value or [])
    return frozenset(str(item).strip().rstrip("/") for item in items if str(item).strip())


def _headers(response: Response, origin: str) -> Response:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Request-ID"
    response.headers["Access-Control-Max-Age"] = "600"
    if origin != "*":
        response.headers["Vary"] = "Origin"
    return response
