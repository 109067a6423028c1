"""What every operator shares: the Finding it returns, the registry, argument schemas and citations.

An operator is a plain function registered with :func:`operator` under its name,
with the JSON Schema of its arguments (checked when a CarePath loads) and the
fact settings it reads. The families of operators live in their own modules
(``op_findings``, ``op_care``, ``op_sessions``, ``op_order``);
:mod:`cds_server.engine.operators` imports them all and is what the rest of the
engine reads the registry from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds_server.engine.context import EvalContext
from cds_server.engine.logic import COMPARATORS
from fhir_mappings.codes import Code

# What an operator found in the record about its statement.
TRUE = "true"  # decisive evidence that the statement holds
FALSE = "false"  # decisive evidence that it does not
SUGGESTIVE = "suggestive"  # evidence that needs confirmation (e.g. an MR-conditional device)
NONE = "none"  # the record says nothing


@dataclass
class Finding:
    """The record's evidence about one leaf criterion."""

    status: str
    reason: str
    evidence: list[str] = field(default_factory=list)
    checked: str = ""
    stated: bool = False  # the record states this fact itself (birth date, the order's own data, a value of absent)
    stated_value: float | None = None  # the number the record states (visits, weeks), compared with a numeric answer
    stated_codes: frozenset[Code] = frozenset()  # the codes the record states (a place of service)
    conflict: str = ""  # an answer the record contradicts, found by the operator itself (recorded pain scores)


OperatorFn = Callable[[EvalContext, Mapping[str, Any]], Finding]


@dataclass(frozen=True)
class Operator:
    """A registered operator: its function, argument schema, purpose and the fact settings it reads."""

    name: str
    fn: OperatorFn
    schema: Mapping[str, Any]
    doc: str
    facts: tuple[str, ...] = ()
    reads_order_code: bool = False  # decides by the order's own code (an alternative's code differs)


REGISTRY: dict[str, Operator] = {}

VS_LIST = {"type": "array", "items": {"type": "string", "pattern": "^VS-"}}
CMP = {"enum": list(COMPARATORS)}
DAYS = {"type": ["integer", "null"], "minimum": 0}
TYPES = {"type": "array", "items": {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"}, "minItems": 1}
IF_NONE = {"enum": ["met", "not-met", "unknown"]}
ANSWER_GROUP = {
    "type": "object",
    "required": ["linkId"],
    "additionalProperties": False,
    "properties": {"linkId": {"type": "string"}, "types": {"type": "array", "items": {"type": "string"}}},
}
CLINICAL_TYPES = (
    "Condition",
    "Observation",
    "AllergyIntolerance",
    "Procedure",
    "Device",
    "DiagnosticReport",
    "ImagingStudy",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationDispense",
    "MedicationAdministration",
    "Encounter",
)


def operator(
    name: str,
    properties: Mapping[str, Any],
    required: tuple[str, ...] = (),
    facts: tuple[str, ...] = (),
    reads_order_code: bool = False,
) -> Callable[[OperatorFn], OperatorFn]:
    """Register an operator under ``name`` with an argument schema and the ``facts`` settings it reads.

    ``reads_order_code``: the operator reads the order's own codes or text. Every other operator
    decides the same for an alternative that differs from the order only in its code, so the
    alternative's decision reuses the order's results for them (``evaluate._worth_offering``).
    """

    def register(fn: OperatorFn) -> OperatorFn:
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": dict(properties),
            "required": list(required),
        }
        doc = (fn.__doc__ or "").strip().splitlines()[0]
        REGISTRY[name] = Operator(name, fn, schema, doc, facts, reads_order_code)
        return fn

    return register


def describe(code: Code) -> str:
    system = code[0].rstrip("/").split("/")[-1]
    return f"{code[1]} ({system})"


def cite(entry_ref: str, code: Code, day: date | None) -> str:
    when = f" on {day.isoformat()}" if day else ""
    return f"{describe(code)} in {entry_ref}{when}"


def days_arg(args: Mapping[str, Any], key: str) -> int | None:
    value = args.get(key)
    return int(value) if value is not None else None


def on(day: date | None) -> str:
    return f" on {day.isoformat()}" if day else ""


def not_understood(doubts: list[str]) -> str:
    """The explanation of an unknown caused by what the reader could not read (at most three named)."""
    more = f" and {len(doubts) - 3} more" if len(doubts) > 3 else ""
    return "could not be ruled out: " + "; ".join(doubts[:3]) + more
