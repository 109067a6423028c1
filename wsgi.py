"""WSGI entry point for gunicorn: ``gunicorn wsgi:app``."""

from cds_server.app import create_app

app = create_app()
