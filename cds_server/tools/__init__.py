"""Commands for developers and operators: ``python -m cds_server …`` and what they print.

What belongs here: the command line (evaluate, scenarios, serve, db), the CarePath
checker and the generated schema reference. Nothing in the service imports these.

May import anything in ``cds_server``, ``fhir_mappings`` and ``hooks``.
"""
