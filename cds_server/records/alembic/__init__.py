"""Alembic's script directory for the records database: ``env.py`` and the revisions in ``versions/``.

It sits inside the package so the migrations ship with the code that needs them.
``cds_server.records.migrations`` runs them; ``alembic.ini`` here serves Alembic's own command.
"""
