"""Payer-side CDS Hooks / Da Vinci CRD service deciding medical necessity from CarePaths.

One call flows downward through the packages (docs/architecture.md draws it):

- ``web``: the Flask surface (routes, authentication, CORS, pages, demo);
- ``pipeline``: the stages of one hook call (checks, Coverage, record, decisions, cards, DTR);
- ``records``: persistence (the store, its migrations, audit copies);
- ``engine``: the pure decision core (CarePath compiled to criteria, evaluated on a record);
- ``tools``: the command line, on top of everything.

The modules directly in this package are the shared core every layer may use:
``config`` (settings), ``errors`` (errors that become OperationOutcomes), ``urls``
and ``links`` (URLs the service checks or signs), ``metrics`` (Prometheus collectors),
``carepath_store`` (CarePaths and terminology loaded from their data folders) and
``scenarios`` (the scenario library). They import no sub-package but ``engine``.
``tests/test_layers.py`` enforces these directions.
"""
