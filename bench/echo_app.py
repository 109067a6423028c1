"""Baseline for ``bench/bench_load.py``: a plain Flask app that only parses the JSON body.

The load benchmark serves this with the same gunicorn settings and drives it
with the same order-sign payloads as the decision service, so the difference
between the two is what the service itself costs (schema validation, FHIR
models, the CarePath, cards, the database writes, the request log) rather than
what HTTP, gunicorn, Flask and JSON parsing of a large body cost anyway.

Run by the benchmark as ``gunicorn --config gunicorn.conf.py echo_app:app``
with ``bench/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/echo")
def echo() -> Response:
    """Parse the body as JSON (like the service must) and answer a small JSON object."""
    body = request.get_json(force=True, silent=False)
    hook = body.get("hook") if isinstance(body, dict) else None
    return jsonify({"cards": [], "hook": hook, "bytes": request.content_length or 0})
