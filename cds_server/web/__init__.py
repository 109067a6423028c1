"""The HTTP surface: the Flask app, its views, authentication, CORS, pages and the demo bench.

What belongs here: anything that knows about Flask, a request or a response —
routes, JWT checks, the decision page, the FHIR operations' HTTP side, health,
logging per request. A view reads the request, hands it to the hook pipeline
(``cds_server.pipeline``) and writes what it answers; it decides nothing itself.

May import: ``cds_server.pipeline``, ``cds_server.records``, the core modules of
``cds_server`` (config, errors, urls, links, metrics, carepath_store, scenarios),
``cds_server.engine``, ``fhir_mappings``, ``hooks``. Must not import ``cds_server.tools``.
"""
