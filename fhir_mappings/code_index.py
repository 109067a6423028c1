"""The record's code index: for each distinct code, which entries carry it.

:class:`CodeIndex` is built once per record, on its first lookup by value set
(``PatientRecord.entries_matching``), over every entry the record kept (each
type in reading order). One lookup by a value set then answers for every
resource type: exact members by set intersection, prefix members among the
codes of their system, and (for questions of doubt) the less specific codes of
a hierarchy whose descendants are members.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from fhir_mappings.codes import Code, CodeMatcher


class Coded(Protocol):
    """What the index reads of an entry (an ``Entry`` or a ``Deferred`` one)."""

    type: str
    codes: frozenset[Code]
    value_codes: frozenset[Code]


@dataclass(slots=True)
class CodeIndex:
    """Every entry of the record (by type, each type in reading order) with, for each distinct code, the
    positions of the entries that carry it: one lookup per value set answers for every type."""

    slots: list[Coded]
    codes: dict[Code, list[int]]  # in ``codes``
    values: dict[Code, list[int]]  # in ``value_codes``
    systems: dict[str, list[Code]]  # the keys of ``codes`` by system
    value_systems: dict[str, list[Code]]  # the keys of ``values`` by system
    undotted: dict[str, dict[str, list[Code]]]  # the keys of ``codes`` by system, then by code without dots

    @classmethod
    def build(cls, slots: list[Coded]) -> CodeIndex:
        codes = _positions(slot.codes for slot in slots)
        values = _positions(slot.value_codes for slot in slots)
        undotted: dict[str, dict[str, list[Code]]] = {}
        for code in codes:
            undotted.setdefault(code[0], {}).setdefault(code[1].replace(".", ""), []).append(code)
        return cls(slots, codes, values, _by_system(codes), _by_system(values), undotted)

    def positions(self, matcher: CodeMatcher, use_values: bool, narrower: bool) -> set[int]:
        """The entries ``matcher`` can say anything about (see PatientRecord.entries_matching)."""
        hits: set[int] = set()
        codes = self.codes
        for code in matcher.members_among(codes.keys(), self.systems):
            hits.update(codes[code])
        if use_values and self.values:
            for code in matcher.members_among(self.values.keys(), self.value_systems):
                hits.update(self.values[code])
        # The codes narrower_members is true for, by set intersection over the codes without their dots.
        for system, broader in matcher.broader().items() if narrower else ():
            undotted = self.undotted.get(system)
            for value in broader.intersection(undotted) if undotted else ():
                for code in undotted[value]:
                    hits.update(codes[code])
        return hits


def _positions(code_sets: Iterable[frozenset[Code]]) -> dict[Code, list[int]]:
    """For each code, the positions of the sets that hold it.

    Entries share their code sets (the terminology hands out one set per known code, with its
    classes), so each distinct set is walked once, whatever number of entries carry it.
    """
    by_set: dict[frozenset[Code], list[int]] = {}
    for i, code_set in enumerate(code_sets):
        if code_set:
            at = by_set.get(code_set)
            if at is None:
                by_set[code_set] = [i]
            else:
                at.append(i)
    found: dict[Code, list[int]] = {}
    for code_set, at in by_set.items():
        for code in code_set:
            known = found.get(code)
            if known is None:
                found[code] = list(at)
            else:
                known.extend(at)
    return found


def _by_system(codes: Iterable[Code]) -> dict[str, list[Code]]:
    out: dict[str, list[Code]] = {}
    for code in codes:
        out.setdefault(code[0], []).append(code)
    return out
