"""The compiled CarePath: frozen objects built once from validated data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fhir_mappings.codes import CodeMatcher
from fhir_mappings.questionnaire import ItemKind

# Default reading of the record's silence per criterion group kind
# (product-decisions.md §1): indications need positive evidence; non-indications
# are judged on the record that was provided.
GROUP_KINDS: dict[str, str] = {
    "population": "unknown",
    "indications": "unknown",
    "subsequent": "unknown",
    "frequency": "unknown",
    "siteOfService": "unknown",
    "nonIndications": "absent",
}
REQUEST_KINDS = tuple(k for k in GROUP_KINDS if k != "nonIndications")


@dataclass(frozen=True)
class ValueSet:
    """A named set of codes with its provenance."""

    id: str
    title: str
    source: str
    matcher: CodeMatcher
    members: tuple[Mapping[str, str], ...]


@dataclass(frozen=True)
class AnswerSpec:
    """How a questionnaire answer decides a leaf criterion.

    Exactly one reading applies: a boolean item (true means the criterion's
    statement holds); a choice item (``true_when`` / ``false_when`` codes);
    a number compared with ``compare``; or a date turned into weeks since it.
    """

    link_id: str
    true_when: frozenset[str] | None = None
    false_when: frozenset[str] | None = None
    compare: tuple[str, float] | None = None
    weeks_since: tuple[str, float] | None = None


@dataclass(frozen=True)
class Leaf:
    """A criterion decided by one operator of the engine's vocabulary."""

    id: str
    text: str
    cite: str
    op: str
    args: Mapping[str, Any]
    answer: AnswerSpec | None
    questions: tuple[str, ...]
    silence: str | None
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    """A criterion combining others with all / any / not."""

    id: str
    text: str
    cite: str
    op: str
    children: tuple[Node, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ref:
    """A criterion that is, word for word, another one (e.g. FS-I1 = FI-I1)."""

    id: str
    text: str
    cite: str
    target: str


Node = Leaf | Group | Ref


@dataclass(frozen=True)
class Disambiguation:
    """How to tell services apart that share a code (e.g. an unlisted code)."""

    link_id: str
    answer_code: str
    text_patterns: tuple[str, ...]
    not_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recognition:
    """How an order with no code of this service is still known to be it (product-decisions.md §8).

    ``matcher`` holds other codings that name the service (a LOINC-coded study, a companion
    code); ``text`` holds word groups that must all appear in the order's text (each group
    lists alternatives: one group for the procedure, one for the body region).
    """

    matcher: CodeMatcher
    text: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Service:
    """One CarePath service with its codes and criteria groups."""

    id: str
    title: str
    cite: str
    order_codes: CodeMatcher
    code_rows: tuple[Mapping[str, Any], ...]
    groups: Mapping[str, Node]
    selection: Node | None
    disambiguation: Disambiguation | None
    auto_approval: bool
    alternatives: tuple[Mapping[str, Any], ...] = ()
    recognition: Recognition | None = None


@dataclass(frozen=True)
class Question:
    """One documentation (DTR) item the CarePath may ask."""

    link_id: str
    text: str
    type: str
    options: tuple[Mapping[str, str], ...] = ()
    repeats: bool = False
    items: tuple[Question, ...] = ()
    enable_when: tuple[Mapping[str, Any], ...] = ()
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Parameter:
    """A named policy value of the CarePath (a threshold or an ambiguity decision)."""

    name: str
    value: Any
    description: str
    decision: str | None


@dataclass(frozen=True, eq=False)
class CarePath:
    """A whole guideline, compiled."""

    id: str
    version: str
    title: str
    effective: str
    source: Mapping[str, Any]
    parameters: Mapping[str, Parameter]
    value_sets: Mapping[str, ValueSet]
    cohort: CodeMatcher
    cohort_value_sets: tuple[str, ...]
    facts: Mapping[str, Any]
    services: tuple[Service, ...]
    questions: Mapping[str, Question]
    nodes: Mapping[str, Node]
    questionnaire_base: str
    document: Mapping[str, Any] = field(repr=False, default_factory=dict)
    _matchers: dict[tuple[str, ...], CodeMatcher] = field(repr=False, default_factory=dict, compare=False)

    @property
    def answer_system(self) -> str:
        """The code system of the CarePath's answer options (the Questionnaires' answerOption codings)."""
        return f"{self.questionnaire_base.rsplit('/', 1)[0]}/CodeSystem/{self.id}-answers"

    @cached_property
    def answer_kinds(self) -> Mapping[str, ItemKind]:
        """What each item takes (type, codes, repeats, unit), so that an answer that does not fit is not read."""
        kinds: dict[str, ItemKind] = {}
        pending = list(self.questions.values())
        while pending:
            q = pending.pop()
            codes = frozenset(str(o.get("code")) for o in q.options)
            kinds[q.link_id] = ItemKind(q.type, codes, q.repeats, q.unit, self.answer_system if codes else None)
            pending.extend(q.items)
        return kinds

    def service(self, service_id: str) -> Service:
        """Return the service with this id.

        :raises KeyError: when the CarePath has no such service.
        """
        for service in self.services:
            if service.id == service_id:
                return service
        raise KeyError(service_id)

    def matcher(self, value_set_ids: list[str] | tuple[str, ...]) -> CodeMatcher:
        """Return one matcher for the union of the given value sets (ids checked at load)."""
        key = tuple(value_set_ids)
        cached = self._matchers.get(key)
        if cached is None:
            cached = CodeMatcher()
            for vs_id in key:
                cached = cached.union(self.value_sets[vs_id].matcher)
            self._matchers[key] = cached
        return cached
