"""The stages of one hook call, from a parsed JSON body to the answer: no Flask, no HTTP server.

What belongs here: checking the envelope and context, choosing the Coverage,
getting the record (prefetch, then the EHR's FHIR server), asking the engine,
and turning its decisions into CRD coverage information, cards and DTR
questionnaires; discovery and feedback validation too. The web layer calls
``invoke.handle`` with a body and gets a response body back.

May import: ``cds_server.records`` (to keep what a call decided), the core modules
of ``cds_server``, ``cds_server.engine``, ``fhir_mappings``, ``hooks``.
Must not import ``cds_server.web`` or ``cds_server.tools``.
"""
