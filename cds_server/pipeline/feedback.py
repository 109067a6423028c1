"""Validation of CDS Hooks feedback bodies (cds-hooks-crd.md §1.8, invariants cds-fb-1..3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_server.errors import InvalidRequest, Problems
from cds_server.pipeline.request_schema import check
from fhir_mappings.dates import canonical_instant

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
