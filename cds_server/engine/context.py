"""Everything one order's evaluation can see, plus a per-order cache of derived facts and decided criteria."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

from cds_server.engine.model import CarePath
from fhir_mappings.codes import CodeMatcher
from fhir_mappings.orders import Order
from fhir_mappings.questionnaire import Answers
from fhir_mappings.record import PatientRecord

T = TypeVar("T")


@dataclass
class EvalContext:
    """Inputs of one order's evaluation.

    ``record_available`` is False when the caller could not obtain the
    patient's record at all; then silence can never mean "absent"
    (product-decisions.md §1).
    """

    carepath: CarePath
    record: PatientRecord
    answers: Answers
    order: Order
    other_orders: tuple[Order, ...]
    as_of: date
    record_available: bool = True
    cache: dict[Hashable, Any] = field(default_factory=dict)  # derived facts, by key (``fact``)
    memo: dict[tuple[str, str], Any] = field(default_factory=dict)  # decided criteria, by (node id, kind)
    findings: dict[str, Any] = field(default_factory=dict)  # a leaf's record evidence (its operator's Finding), by id
    brief: bool = False  # only the outcome is read (an alternative's verdict): no explanation is built

    def matcher(self, value_set_ids: list[str] | tuple[str, ...]) -> CodeMatcher:
        """Return the compiled union of these value sets."""
        known = self.carepath._matchers.get(value_set_ids) if type(value_set_ids) is tuple else None
        return known if known is not None else self.carepath.matcher(tuple(value_set_ids))

    def fact(self, key: Hashable, compute: Callable[[], T]) -> T:
        """Return a derived fact, computing it once per order."""
        if key not in self.cache:
            self.cache[key] = compute()
        value: T = self.cache[key]
        return value

    def param(self, name: str) -> Any:
        """Return the value of a CarePath parameter."""
        return self.carepath.parameters[name].value
