"""The engine's closed vocabulary: every way a leaf criterion can read the record.

Each operator is a plain function registered with the JSON Schema of its
arguments; the CarePath loader checks every leaf's arguments against that
schema, so a typo in a rules file fails at load with its JSON path, never at
evaluation time. Operators return a :class:`Finding` about the criterion's
statement; how silence and questionnaire answers combine with it is decided
in one place, :mod:`cds_server.engine.criteria`.

This module is the registry's front door: importing it registers every family
(``op_findings``, ``op_care``, ``op_sessions``, ``op_order``), whose shared
parts are in ``operator_base``.
"""

from __future__ import annotations

from cds_server.engine import op_care, op_findings, op_order, op_sessions
from cds_server.engine.operator_base import (
    CLINICAL_TYPES,
    FALSE,
    NONE,
    REGISTRY,
    SUGGESTIVE,
    TRUE,
    Finding,
    Operator,
    OperatorFn,
    operator,
)

FAMILIES = (op_findings, op_care, op_sessions, op_order)

__all__ = [
    "CLINICAL_TYPES",
    "FALSE",
    "FAMILIES",
    "NONE",
    "REGISTRY",
    "SUGGESTIVE",
    "TRUE",
    "Finding",
    "Operator",
    "OperatorFn",
    "operator",
]
