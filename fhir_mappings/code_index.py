"""The record's code index: for each distinct code, which entries carry it.

:class:`CodeIndex` is built once per record, on its first lookup by value set
(``PatientRecord.entries_matching``), over every entry the record kept (each
type in reading order). One lookup by a value set then answers for every
resource type: exact members by set intersection, prefix members by looking
each prefix up in a table of the record's codes by prefix, and (for questions
of doubt) the less specific codes of a hierarchy whose descendants are members.

The per-system tables are built on the first question that needs them: a
lookup costs what the value set lists, not what the record holds (a long
history holds hundreds of codes of a system a value set names a few prefixes
of).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from fhir_mappings.codes import Code, CodeMatcher


class Coded(Protocol):
    """What the index reads of an entry (an ``Entry`` or a ``Deferred`` one)."""

    type: str
    codes: frozenset[Code]
    value_codes: frozenset[Code]


@dataclass(slots=True)
class _Codes:
    """The positions of the entries carrying each code (of ``codes`` or of ``value_codes``), and lookups over
    those codes built on first use."""

    at: dict[Code, list[int]]
    keys: frozenset[Code] = frozenset()
    _by_system: dict[str, list[Code]] | None = None
    _prefixed: dict[str, dict[str, list[Code]]] = field(default_factory=dict)
    _undotted: dict[str, dict[str, list[Code]]] | None = None
    _members: dict[int, tuple[CodeMatcher, set[Code]]] = field(default_factory=dict)

    def members(self, matcher: CodeMatcher) -> set[Code]:
        """``matcher.members_among(keys, by system)``: exact members by set intersection, prefix members by
        looking each prefix up (:meth:`prefixed`). Kept per matcher: proof, denials and doubts ask again."""
        kept = self._members.get(id(matcher))
        if kept is not None and kept[0] is matcher:
            return kept[1]
        found = self._members_of(matcher)
        self._members[id(matcher)] = (matcher, found)
        return found

    def _members_of(self, matcher: CodeMatcher) -> set[Code]:
        if matcher.others:
            return set().union(*(self.members(m) for m in matcher.others))
        found = set(matcher.exact & self.keys)
        excluded = matcher.excluded
        for system, prefixes in matcher.prefixes.items():
            table = self.prefixed(system)
            if not table:
                continue
            if "" in prefixes:  # an empty prefix names every code of the system: CodeMatcher's own test
                found |= matcher.members_among(self.keys, self.by_system())
                continue
            for prefix in prefixes:
                for code in table.get(prefix, ()):
                    if code not in excluded:
                        found.add(code)
        return found

    def by_system(self) -> dict[str, list[Code]]:
        if self._by_system is None:
            out: dict[str, list[Code]] = {}
            for code in self.at:
                out.setdefault(code[0], []).append(code)
            self._by_system = out
        return self._by_system

    def prefixed(self, system: str) -> dict[str, list[Code]]:
        """The codes of ``system`` by every non-empty prefix of the code without its dots (what
        ``value.startswith(prefix)`` is true for)."""
        table = self._prefixed.get(system)
        if table is None:
            table = {}
            for code in self.by_system().get(system, ()):
                value = code[1].replace(".", "")
                for k in range(1, len(value) + 1):
                    hit = table.get(value[:k])
                    if hit is None:
                        table[value[:k]] = [code]
                    else:
                        hit.append(code)
            self._prefixed[system] = table
        return table

    def undotted(self, system: str) -> dict[str, list[Code]] | None:
        """The codes of ``system`` by their code without dots (None when the record holds none)."""
        if self._undotted is None:
            out: dict[str, dict[str, list[Code]]] = {}
            for code in self.at:
                out.setdefault(code[0], {}).setdefault(code[1].replace(".", ""), []).append(code)
            self._undotted = out
        return self._undotted.get(system)


@dataclass(slots=True)
class CodeIndex:
    """Every entry of the record (by type, each type in reading order) with, for each distinct code, the
    positions of the entries that carry it: one lookup per value set answers for every type."""

    slots: list[Coded]
    codes: _Codes  # in ``codes``
    values: _Codes  # in ``value_codes``

    @classmethod
    def build(cls, slots: list[Coded]) -> CodeIndex:
        codes, values = _positions(slots)
        return cls(slots, _Codes(codes, frozenset(codes)), _Codes(values, frozenset(values)))

    def positions(self, matcher: CodeMatcher, use_values: bool, narrower: bool) -> set[int]:
        """The entries ``matcher`` can say anything about (see PatientRecord.entries_matching)."""
        hits: set[int] = set()
        at = self.codes.at
        for code in self.codes.members(matcher):
            hits.update(at[code])
        if use_values and self.values.at:
            for code in self.values.members(matcher):
                hits.update(self.values.at[code])
        # The codes narrower_members is true for, by set intersection over the codes without their dots.
        for system, broader in matcher.broader().items() if narrower else ():
            undotted = self.codes.undotted(system)
            for value in broader.intersection(undotted) if undotted else ():
                for code in undotted[value]:
                    hits.update(at[code])
        return hits


def _positions(slots: list[Coded]) -> tuple[dict[Code, list[int]], dict[Code, list[int]]]:
    """For each code of the entries' ``codes`` and of their ``value_codes``, the positions of the entries that
    carry it.

    Entries share their code sets (the terminology hands out one set per known code, with its
    classes), so each distinct set is walked once, whatever number of entries carry it.
    """
    by_set: dict[frozenset[Code], list[int]] = {}
    by_value_set: dict[frozenset[Code], list[int]] = {}
    for i, slot in enumerate(slots):
        code_set = slot.codes
        if code_set:
            at = by_set.get(code_set)
            if at is None:
                by_set[code_set] = [i]
            else:
                at.append(i)
        value_set = slot.value_codes
        if value_set:
            at = by_value_set.get(value_set)
            if at is None:
                by_value_set[value_set] = [i]
            else:
                at.append(i)
    return _by_code(by_set), _by_code(by_value_set)


def _by_code(by_set: dict[frozenset[Code], list[int]]) -> dict[Code, list[int]]:
    found: dict[Code, list[int]] = {}
    for code_set, at in by_set.items():
        for code in code_set:
            known = found.get(code)
            if known is None:
                found[code] = list(at)
            else:
                known.extend(at)
    return found
