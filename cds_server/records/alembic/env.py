"""Alembic's entry point for every command (``upgrade``, ``current``, ``stamp``…) on the records database.

All of it is in :func:`cds_server.records.migrations.run_env`, so Alembic's own command line
takes the same lock, refuses the same newer databases and adopts the same older ones as
the service does at start.
"""

import logging.config

from alembic import context

from cds_server.records.migrations import run_env

if context.config.config_file_name and context.config.file_config.has_section("loggers"):
    logging.config.fileConfig(context.config.config_file_name, disable_existing_loggers=False)
run_env(context)
