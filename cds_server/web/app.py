"""The application factory: the one place where settings, CarePaths, storage and routes are wired."""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from flask import Flask
from requests.adapters import HTTPAdapter

from cds_server.carepath_store import DEFAULT_CAREPATHS, load_carepaths
from cds_server.config import DEFAULTS
from cds_server.pipeline.call import Runtime
from cds_server.pipeline.fhir_client import CircuitBreaker
from cds_server.records.store import Store
from cds_server.web.auth import build_authenticator, guard, require_public_url
from cds_server.web.cors import install as install_cors
from cds_server.web.observability import configure_logging
from cds_server.web.observability import install as install_observability


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then ``CDS_*`` environment variables, then ``config`` (tests).

    CarePaths are loaded and validated here, so a broken guideline file stops
    the service at start-up with the JSON path at fault.
    """
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("CDS")
    if config:
        app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    configure_logging(str(app.config["LOG_LEVEL"]), str(app.config["LOG_FORMAT"]))
    require_public_url(app.config)
    app.extensions["cds"] = build_runtime(app.config)
    from cds_server.web.api import bp
    from cds_server.web.fhir_api import fhir
    from cds_server.web.health import health
    from cds_server.web.pages import pages

    runtime = app.extensions["cds"]
    app.extensions["cds-auth"] = build_authenticator(app.config, runtime.store, runtime.session)
    _warn_about_authentication(app)
    install_observability(app)  # first: every later hook, the auth guard included, logs with the request id
    app.before_request(guard)
    app.register_blueprint(bp)
    app.register_blueprint(fhir)
    app.register_blueprint(health)
    app.register_blueprint(pages)
    if app.config["DEMO_ENABLED"]:
        from cds_server.web import demo

        if app.config["AUTH_REQUIRED"]:
            app.logger.warning(
                "DEMO BENCH ON with authentication: /demo/token mints tokens for callers on this machine. "
                "Never enable it on a production endpoint."
            )

        demo.install(app)
    install_cors(app)
    return app


def _warn_about_authentication(app: Flask) -> None:
    if not app.config["AUTH_REQUIRED"]:
        app.logger.warning(
            "DEMO MODE: client authentication is OFF; every caller is trusted. Never run so with real data."
        )
    elif not app.config["TRUSTED_CLIENTS"] and not app.config["DEMO_ENABLED"]:
        app.logger.warning("No TRUSTED_CLIENTS configured: every protected call will get 401 (see docs/security.md).")


def build_runtime(settings: Mapping[str, Any]) -> Runtime:
    """Load CarePaths, open the store and make the pooled HTTP session and thread pool."""
    paths = tuple(_paths(settings["CAREPATHS"])) or DEFAULT_CAREPATHS
    carepaths = load_carepaths(paths, settings["CAREPATH_OVERRIDES"])
    session = requests.Session()
    parallel = int(settings["FHIR_MAX_PARALLEL"])
    adapter = HTTPAdapter(pool_connections=parallel, pool_maxsize=parallel, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False  # never route patient data through an environment proxy by accident
    clock = settings.get("CLOCK") or (lambda: datetime.now(UTC))
    breaker = CircuitBreaker(int(settings["CIRCUIT_FAILURES"]), float(settings["CIRCUIT_COOLDOWN_SECONDS"]))
    store = Store(settings["DATABASE_URL"])
    link_secret = None
    if settings["AUTH_REQUIRED"]:  # only then does a decision page need more than its URL
        link_secret = str(settings["LINK_SECRET"] or "") or store.shared_secret("decision-links")
    return Runtime(
        carepaths,
        store,
        settings,
        session,
        ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="fhir"),
        clock,
        breaker,
        link_secret,
        store.shared_secret("assertion-ids"),
    )


def _paths(value: Any) -> list[str]:
    if isinstance(value, str):
        return [p for p in value.split(os.pathsep if os.pathsep in value else ",") if p.strip()]
    return [str(p) for p in value or []]
