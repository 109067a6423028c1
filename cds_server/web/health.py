"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from cds_server.web.wire import json_response

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return json_response({"status": "ok"})


@health.get("/readyz")
def readyz() -> Response:
    """The database answers and CarePaths are loaded."""
    runtime = current_app.extensions["cds"]
    checks = {"database": runtime.store.ping(), "carepaths": bool(runtime.carepaths)}
    ready = all(checks.values())
    return json_response({"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)
