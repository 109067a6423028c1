"""Codings out of CodeableConcepts, and matching them against compiled value sets."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from fhir_mappings.systems import ATC, ICD10CM, normalize_code, normalize_system

# Systems whose codes nest by prefix: a shorter code is the class of every longer one that starts with it.
HIERARCHICAL_SYSTEMS = frozenset({ICD10CM, ATC})

Code = tuple[str, str]
"""A normalised (system, code) pair."""


def coding_key(coding: Mapping[str, Any]) -> Code | None:
    """Return the normalised (system, code) of a Coding, or None when either is missing."""
    if type(coding) is not dict and not isinstance(coding, Mapping):  # the type test first: ABC checks are slow
        return None
    raw = coding.get("code")
    if not isinstance(raw, str):
        return None
    system = coding.get("system")
    return normalised_key(system if isinstance(system, str) else None, raw)


@functools.lru_cache(maxsize=16384)
def normalised_key(system: str | None, raw: str) -> Code | None:
    """coding_key's normalisation, remembered: records repeat the same few hundred codings."""
    system = normalize_system(system)
    if not system or not raw.strip():
        return None
    return system, normalize_code(system, raw)


def concept_codes(concept: Any) -> set[Code]:
    """Return every normalised coding of a CodeableConcept (or of a list of them)."""
    out: set[Code] = set()
    if isinstance(concept, list):
        for item in concept:
            out |= concept_codes(item)
        return out
    if type(concept) is not dict and not isinstance(concept, Mapping):
        return out
    codings = concept.get("coding")
    if isinstance(codings, list):
        for coding in codings:
            key = coding_key(coding)
            if key:
                out.add(key)
    return out


def concept_keys(concept: Any) -> tuple[set[Code], int]:
    """The normalised codes of a concept's codings (or a list of concepts'), and how many codings have no code.

    The codes are the ones :func:`concept_codes` reads; the count is of non-empty codings without one.
    """
    codes: set[Code] = set()
    if type(concept) is dict:
        uncoded = _plain_keys(concept.get("coding"), codes)
        if uncoded is not None:
            return codes, uncoded
        codes = set()
    elif type(concept) is list:
        uncoded = _plain_list_keys(concept, codes)
        if uncoded is not None:
            return codes, uncoded
        codes = set()
    uncoded = 0
    for coding in _codings(concept):
        raw = coding.get("code")
        if isinstance(raw, str):
            system = coding.get("system")
            key = normalised_key(system if isinstance(system, str) else None, raw)  # = coding_key(coding)
            if key:
                codes.add(key)
        elif coding:
            uncoded += 1
    return codes, uncoded


def _plain_keys(codings: Any, codes: set[Code]) -> int | None:
    """Add to ``codes`` the keys of a concept's ``coding`` when it is absent or a list of objects (JSON's usual
    shape), in one loop, and return how many codings have no code; None for any other shape (``codes`` is then
    partly filled and the general path reads the concept again)."""
    if codings is None:
        return 0
    if type(codings) is not list:
        return None
    uncoded = 0
    for coding in codings:
        if type(coding) is not dict:
            return None
        raw = coding.get("code")
        if isinstance(raw, str):
            system = coding.get("system")
            key = normalised_key(system if isinstance(system, str) else None, raw)
            if key:
                codes.add(key)
        elif coding:
            uncoded += 1
    return uncoded


def _plain_list_keys(concepts: list[Any], codes: set[Code]) -> int | None:
    """:func:`_plain_keys` over a list of concepts (an Encounter's ``type``), each of JSON's usual shape."""
    uncoded = 0
    for concept in concepts:
        if type(concept) is not dict:
            return None
        more = _plain_keys(concept.get("coding"), codes)
        if more is None:
            return None
        uncoded += more
    return uncoded


def _codings(concept: Any) -> list[Mapping[str, Any]]:
    if concept is None:
        return []
    if isinstance(concept, list):
        return [c for item in concept for c in _codings(item)]
    return [c for c in arr(obj(concept).get("coding")) if type(c) is dict or isinstance(c, Mapping)]


def concept_text(concept: Any) -> str:
    """Return the human text of a CodeableConcept: its text, else its codings' displays."""
    if type(concept) is not dict and not isinstance(concept, Mapping):
        return ""
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    displays = [
        c.get("display")
        for c in arr(concept.get("coding"))
        if (type(c) is dict or isinstance(c, Mapping)) and isinstance(c.get("display"), str)
    ]
    return "; ".join(d for d in displays if d)


@dataclass(frozen=True)
class CodeMatcher:
    """A compiled value set: exact members plus prefix ("code or any descendant") members.

    Matching is by system and code; a prefix row matches the code itself and
    every code that starts with it, which is how ICD-10-CM and ATC
    hierarchies are expressed in the CarePath data.
    """

    exact: frozenset[Code] = field(default_factory=frozenset)
    prefixes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    excluded: frozenset[Code] = field(default_factory=frozenset)
    others: tuple[CodeMatcher, ...] = ()

    @classmethod
    def from_members(
        cls, members: Iterable[Mapping[str, str]], exclude: Iterable[Mapping[str, str]] = ()
    ) -> CodeMatcher:
        """Build a matcher from value-set rows ``{system, code, match}``.

        ``exclude`` rows (exact codes) are removed even when a prefix row
        would match them, e.g. aspirin inside an antiplatelet ATC class.
        """
        exact: set[Code] = set()
        prefixes: dict[str, list[str]] = {}
        for row in members:
            system = normalize_system(row["system"])
            code = normalize_code(system, row["code"])
            if row.get("match", "exact") == "prefix":
                prefixes.setdefault(system, []).append(code.replace(".", ""))
            else:
                exact.add((system, code))
        excluded = {
            (normalize_system(r["system"]), normalize_code(normalize_system(r["system"]), r["code"])) for r in exclude
        }
        return cls(frozenset(exact - excluded), {s: tuple(sorted(p)) for s, p in prefixes.items()}, frozenset(excluded))

    def union(self, other: CodeMatcher) -> CodeMatcher:
        """Return a matcher that matches what either matcher matches."""
        if not other:
            return self
        if not self:
            return other
        if self.excluded or other.excluded or self.others or other.others:
            return CodeMatcher(others=(self, other))
        merged: dict[str, tuple[str, ...]] = dict(self.prefixes)
        for system, prefixes in other.prefixes.items():
            merged[system] = tuple(sorted(set(merged.get(system, ())) | set(prefixes)))
        return CodeMatcher(self.exact | other.exact, merged)

    def matches(self, code: Code) -> bool:
        """Return True when ``code`` is a member."""
        if self.others:
            return any(m.matches(code) for m in self.others)
        if code in self.exact:
            return True
        if code in self.excluded:
            return False
        prefixes = self.prefixes.get(code[0])
        if not prefixes:
            return False
        value = code[1].replace(".", "")
        return value.startswith(prefixes) if prefixes else False

    def members_among(self, codes: AbstractSet[Code], by_system: Mapping[str, Iterable[Code]]) -> set[Code]:
        """Return the members among ``codes`` (``by_system``: the same codes grouped by system).

        The same answer as ``{c for c in codes if self.matches(c)}``, without testing codes one by
        one: exact members by set intersection, prefix members only among codes of their system.
        """
        if self.others:
            return set().union(*(m.members_among(codes, by_system) for m in self.others))
        exact = self.exact
        # Test the smaller side's members against the larger (a value set may list thousands of codes).
        found = {c for c in codes if c in exact} if len(codes) < len(exact) else {c for c in exact if c in codes}
        for system, prefixes in self.prefixes.items():
            for code in by_system.get(system, ()):
                if code not in self.excluded and code[1].replace(".", "").startswith(prefixes):
                    found.add(code)
        return found

    def first_match(self, codes: Iterable[Code]) -> Code | None:
        """Return the first member among ``codes`` (sorted for stable explanations).

        The least member, found without sorting: the exact members by one set intersection, then
        only the codes of a system with prefix rows tested one by one (a union asks each part).
        """
        if type(codes) is not frozenset and type(codes) is not set:
            codes = frozenset(codes)
        if self.others:
            found = [hit for m in self.others if (hit := m.first_match(codes)) is not None]
            return min(found) if found else None
        hits = self.exact.intersection(codes)
        best = min(hits) if hits else None
        prefixes = self.prefixes
        if prefixes:
            excluded = self.excluded
            for code in codes:
                rows = prefixes.get(code[0])
                if (
                    rows
                    and (best is None or code < best)
                    and code not in excluded
                    and code[1].replace(".", "").startswith(rows)
                ):
                    best = code
        return best

    def narrower_members(self, code: Code) -> bool:
        """Return True when ``code`` is a less specific code of a hierarchy whose descendants are members.

        ``L03.2`` (cellulitis of face and neck) is not itself a member of a set listing ``L03.22*``, but
        it may mean one: a reader must ask rather than read it as "not a member". Only hierarchical
        systems (ICD-10-CM, ATC) have descendants.
        """
        if self.others:
            return any(m.narrower_members(code) for m in self.others)
        value = code[1].replace(".", "")
        return bool(value) and value in self._broader.get(code[0], ())

    def broader(self) -> Mapping[str, frozenset[str]]:
        """Per system, the codes (dots dropped) :meth:`narrower_members` is true for, of every part."""
        return self._all_broader

    @functools.cached_property
    def _all_broader(self) -> dict[str, frozenset[str]]:
        if not self.others:
            return self._broader
        found: dict[str, frozenset[str]] = {}
        for part in self.others:
            for system, values in part.broader().items():
                found[system] = found.get(system, frozenset()) | values
        return found

    @functools.cached_property
    def _broader(self) -> dict[str, frozenset[str]]:
        """Per system, every proper prefix (dots dropped) of a prefix member, and of an exact member
        in a hierarchical system: the codes :meth:`narrower_members` is true for, computed once."""
        found: dict[str, set[str]] = {}
        rows = [(s, p) for s, ps in self.prefixes.items() for p in ps]
        rows += [(s, c.replace(".", "")) for s, c in self.exact if s in HIERARCHICAL_SYSTEMS]
        for system, member in rows:
            found.setdefault(system, set()).update(member[:k] for k in range(1, len(member)))
        return {system: frozenset(prefixes) for system, prefixes in found.items()}

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes or self.others)


def obj(value: Any) -> Mapping[str, Any]:
    """Return ``value`` when it is a JSON object, else an empty one (real data has surprises)."""
    # ``type(...) is dict`` and ``None`` first: parsed JSON is plain dicts, and the ABC check is slow.
    if type(value) is dict:
        return value
    return {} if value is None or not isinstance(value, Mapping) else value


def arr(value: Any) -> list[Any]:
    """Return ``value`` when it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []
