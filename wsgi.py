"""WSGI entry point for gunicorn: ``gunicorn wsgi:app``."""

from cds_server.web.app import create_app

app = create_app()
