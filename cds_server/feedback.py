"""Validation of CDS Hooks feedback bodies (cds-hooks-crd.md §1.8, invariants cds-fb-1..3)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cds_server.errors import InvalidRequest, Problems
from cds_server.request_schema import check

FEEDBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "required": ["card", "outcome", "outcomeTimestamp"],
                "properties": {
                    "card": {"type": "string", "minLength": 1, "maxLength": 200},
                    "outcome": {"enum": ["accepted", "overridden"]},
                    "outcomeTimestamp": {
                        "type": "string",
                        "pattern": "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?Z$",
                    },
                    "acceptedSuggestions": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
                    },
                    "overrideReason": {
                        "type": "object",
                        "anyOf": [{"required": ["reason"]}, {"required": ["userComment"]}],
                        "properties": {
                            "reason": {"type": "object", "required": ["code", "system"]},
                            "userComment": {"type": "string"},
                        },
                    },
                },
                "if": {"properties": {"outcome": {"const": "accepted"}}},
                "then": {"required": ["acceptedSuggestions"]},
            },
        }
    },
}

_INSTANT = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z", re.ASCII)


def canonical_instant(text: str) -> str:
    """Return the one spelling kept for an ``outcomeTimestamp``: seconds, the fraction without trailing zeros, ``Z``.

    ``…T10:00:00Z``, ``…T10:00:00.0Z`` and ``…T10:00:00.000Z`` are one instant and all give
    ``…T10:00:00Z``, so feedback is kept once whichever way a client writes the time. Every
    digit given (up to nanoseconds) is kept: two different instants never share a spelling.

    :raises ValueError: not a UTC (``Z``) instant with at most 9 fractional digits, or not a real date and time.
    """
    match = _INSTANT.fullmatch(text)
    if match is None:
        raise ValueError(f"not a UTC instant: {text[:60]!r}")
    datetime.fromisoformat(match[1])  # a real date and time: no 30 February, no hour 24
    fraction = (match[2] or "").rstrip("0")
    return f"{match[1]}.{fraction}Z" if fraction else f"{match[1]}Z"


def validate_feedback(body: Any) -> list[Mapping[str, Any]]:
    """Return the feedback items of a valid body.

    :raises InvalidRequest: listing every problem with its JSON path (400).
    """
    check(body, FEEDBACK_SCHEMA, "$", "The feedback is not valid CDS Hooks feedback")
    problems = Problems()
    for i, item in enumerate(body["feedback"]):
        try:
            canonical_instant(item["outcomeTimestamp"])
        except ValueError:
            problems.add("outcomeTimestamp is not a real instant", f"$.feedback[{i}].outcomeTimestamp")
    problems.raise_if_any(InvalidRequest, "The feedback is not valid CDS Hooks feedback")
    return list(body["feedback"])
