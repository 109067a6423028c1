"""pytest's ``--doctest-modules`` imports every module; ``env.py`` only runs inside an Alembic command."""

collect_ignore = ["env.py"]
