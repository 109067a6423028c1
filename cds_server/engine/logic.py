"""Three-valued logic (product-decisions.md §2).

ALL is met when every part is met, not met when any part is not met,
otherwise unknown. ANY is met when some part is met, not met when every part
is not met, otherwise unknown. NOT swaps met and not met and keeps unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class Tri(str, Enum):
    """The truth of one criterion: met, not met, or unknown (data missing)."""

    MET = "met"
    NOT_MET = "not-met"
    UNKNOWN = "unknown"

    def negate(self) -> Tri:
        """Return NOT of this value."""
        if self is Tri.MET:
            return Tri.NOT_MET
        if self is Tri.NOT_MET:
            return Tri.MET
        return Tri.UNKNOWN


def all_of(values: Iterable[Tri]) -> Tri:
    """Combine with ALL (Kleene conjunction); an empty ALL is met."""
    result = Tri.MET
    for value in values:
        if value is Tri.NOT_MET:
            return Tri.NOT_MET
        if value is Tri.UNKNOWN:
            result = Tri.UNKNOWN
    return result


def any_of(values: Iterable[Tri]) -> Tri:
    """Combine with ANY (Kleene disjunction); an empty ANY is not met."""
    result = Tri.NOT_MET
    for value in values:
        if value is Tri.MET:
            return Tri.MET
        if value is Tri.UNKNOWN:
            result = Tri.UNKNOWN
    return result


def compare(left: float, op: str, right: float) -> bool:
    """Apply a comparison operator named in CarePath data."""
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    raise ValueError(f"unknown comparator {op!r}")


COMPARATORS = (">", ">=", "<", "<=", "==", "!=")
