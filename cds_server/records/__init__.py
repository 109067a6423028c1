"""Persistence: what the service keeps (invocations, assertions, cards, feedback, authorization numbers).

What belongs here: the SQLAlchemy store, the schema and its migrations, and what an
audit copy of a request keeps. It stores what it is given; it decides nothing and
knows no hook, card or HTTP request.

May import: the core modules of ``cds_server`` and ``fhir_mappings`` (for date forms).
Must not import ``cds_server.web``, ``cds_server.pipeline``, ``cds_server.tools`` or ``cds_server.engine``.
"""
