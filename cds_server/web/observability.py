"""Structured logs, Prometheus metrics, and one log line per request.

Logs are JSON, one object per line, with the request id; they never carry
request bodies, patient data or tokens (only ids of services and decisions,
statuses and timings). Metrics work across gunicorn workers through
prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any safe extras."""

    SAFE = ("request_id", "method", "path", "status", "duration_ms", "service", "hook", "hook_instance", "outcome")

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in self.SAFE:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Send logs to stderr, as JSON unless LOG_FORMAT is 'text'."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler._cds_handler = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "_cds_handler", False)] + [handler]
    root.setLevel(level.upper())


def request_id() -> str:
    """The request's id for logs: the caller's X-Request-ID when it is sane, else a fresh one."""
    given = request.headers.get("X-Request-ID", "")
    return given if given.isascii() and 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex


def install(app: Flask) -> None:
    """Log one line per request and expose ``GET /metrics``."""
    log = logging.getLogger("cds_server.requests")

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.request_id = request_id()

    @app.after_request
    def _log(response: Response) -> Response:
        duration = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        log.info(
            "request",
            extra={
                "request_id": g.setdefault("request_id", request_id()),  # a CORS preflight skips _start
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration, 2),
            },
        )
        response.headers["X-Request-ID"] = str(g.get("request_id", ""))
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)
