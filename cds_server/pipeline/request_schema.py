"""Validation of the CDS Hooks request envelope and each hook's context (JSON Schema, draft 2020-12).

There is no official JSON Schema for CDS Hooks 2.0 (cds-hooks-crd.md §1.11);
this one is written from the spec's tables. Unknown members are allowed and
ignored (CRD hook-23, found-33).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema
import jsonschema

from cds_server.errors import InvalidRequest, Problems

UUID = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

ENVELOPE: dict[str, Any] = {
    "type": "object",
    "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"type": "string", "minLength": 1},
        "hookInstance": {"type": "string", "pattern": UUID},
        # "\\$" in the set is a literal $, escaped so fastjsonschema does not read it as the end of the string
        "fhirServer": {"type": "string", "pattern": "^https?://[^\\s/\\$.?#].[^\\s]*$"},
        "fhirAuthorization": {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in", "scope", "subject"],
            "properties": {
                "access_token": {"type": "string", "minLength": 1},
                "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer", "minimum": 0},
                "scope": {"type": "string"},
                "subject": {"type": "string"},
                "patient": {"type": "string"},
            },
        },
        "context": {"type": "object"},
        "prefetch": {
            "type": "object",
            "additionalProperties": {  # null, or a resource (required and properties apply to objects only)
                "type": ["null", "object"],
                "required": ["resourceType"],
                "properties": {"resourceType": {"type": "string"}},
            },
        },
        "extension": {"type": "object"},
    },
    "dependentRequired": {"fhirAuthorization": ["fhirServer"]},
}


_VALIDATORS: dict[int, tuple[Mapping[str, Any], jsonschema.Draft202012Validator]] = {}
_FAST: dict[int, tuple[Mapping[str, Any], Callable[[Any], Any]]] = {}


def _validator(schema: Mapping[str, Any]) -> jsonschema.Draft202012Validator:
    """Return a compiled validator, kept with its schema (an id is only unique while its object lives)."""
    kept = _VALIDATORS.get(id(schema))
    if kept is None or kept[0] is not schema:
        kept = _VALIDATORS[id(schema)] = (schema, jsonschema.Draft202012Validator(schema))
    return kept[1]


def _fast(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    """The same schema compiled to Python code (``fastjsonschema``): a yes/no answer, about 20 times faster.

    fastjsonschema knows draft 7, where ``dependentRequired`` (2019-09) is spelled ``dependencies``;
    the schemas here use nothing else that differs (tests/test_request_schema.py holds the two
    validators to the same verdict on every mutation of real requests).
    """
    kept = _FAST.get(id(schema))
    if kept is None or kept[0] is not schema:
        kept = _FAST[id(schema)] = (schema, fastjsonschema.compile(_draft7(schema)))
    return kept[1]


def _draft7(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_draft7(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    return {("dependencies" if k == "dependentRequired" else k): _draft7(v) for k, v in schema.items()}


def check(instance: Any, schema: Mapping[str, Any], where: str, summary: str) -> None:
    """Validate ``instance``; raise InvalidRequest listing every problem with its JSON path.

    A conforming instance is recognised by the compiled validator; only one that does not is walked
    by ``jsonschema``, which names every problem (jsonschema stays the authority on what they are).

    :raises InvalidRequest: when the instance does not conform.
    """
    try:
        _fast(schema)(instance)
        return
    except fastjsonschema.JsonSchemaException:
        pass
    validator = _validator(schema)
    problems = Problems()
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))[:20]:
        path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.add(_message(error), path)
    problems.raise_if_any(InvalidRequest, summary)


_LIMITS = {
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
}


def _message(error: jsonschema.ValidationError) -> str:
    """Say what is wrong without repeating the value: a misplaced token or a patient's name must not
    travel back in the answer, nor into the invocation record that keeps it."""
    rule, expected = error.validator, error.validator_value
    if rule == "required":
        text = error.message  # names the missing member, taken from the schema
    elif rule == "type":
        text = f"must be of type {' or '.join(expected) if isinstance(expected, list) else expected}"
    elif rule in ("enum", "const"):
        choices = expected if isinstance(expected, list) else [expected]
        text = f"must be one of {', '.join(json.dumps(c) for c in choices)}"
    elif rule == "pattern":
        text = f"does not match the pattern {expected}"
    elif rule in _LIMITS:
        text = f"breaks {rule} {expected}"
    elif rule == "additionalProperties":
        text = "has members that are not allowed here"
    else:
        text = f"does not satisfy {rule}"
    return text if len(text) <= 200 else text[:197] + "..."
