"""The state of one CarePath compilation, its error, and the first things compiled: parameters, value sets, questions.

:class:`CompilerBase` holds the document and what has been compiled so far, and
knows how to fail (:class:`InvalidCarePathError`, naming the JSON path at fault)
and how to resolve ``{"param": name}`` references. The criteria are compiled in
``compile_criteria``, the services and facts in ``compile``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cds_server.engine.model import (
    Node,
    Parameter,
    Question,
    ValueSet,
)
from fhir_mappings.codes import CodeMatcher


class InvalidCarePathError(ValueError):
    """A CarePath document is invalid; ``path`` is the JSON path of the (first) fault.

    ``problems`` lists every fault found in the same pass as (path, message), so an
    author fixes a file in one round rather than one error per run.
    """

    def __init__(self, path: str, message: str, source: str = "CarePath", more: Sequence[tuple[str, str]] = ()) -> None:
        self.path = path
        self.message = message
        self.source = source
        self.problems = [(path, message), *more]
        super().__init__(f"{source}: {path}: {message}")


def short(message: str, limit: int = 300) -> str:
    """A validation message cut to ``limit`` characters (schema messages can quote whole documents)."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


class CompilerBase:
    """One compilation: holds the document, resolved parameters and what was seen so far."""

    doc: Mapping[str, Any]
    source: str
    parameters: dict[str, Parameter]
    value_sets: dict[str, ValueSet]
    questions: dict[str, Question]
    nodes: dict[str, Node]
    refs: list[tuple[str, str]]
    disabled: set[str]
    combination_components: set[str]

    def fail(self, path: str, message: str) -> InvalidCarePathError:
        return InvalidCarePathError(path, message, self.source)

    # -- parameters ---------------------------------------------------------------

    def _parameters(self, overrides: Mapping[str, Any]) -> dict[str, Parameter]:
        declared = self.doc["parameters"]
        params = {}
        for name, spec in declared.items():
            params[name] = Parameter(name, spec["value"], spec["description"], spec.get("decision"))
        for name, value in overrides.items():
            if name not in params:
                raise self.fail(f"$.parameters.{name}", "override for a parameter this CarePath does not declare")
            default = params[name].value
            if type(default) is not type(value) and not (isinstance(default, float) and isinstance(value, int)):
                raise self.fail(f"$.parameters.{name}", f"override must be of type {type(default).__name__}")
            params[name] = Parameter(name, value, params[name].description, params[name].decision)
        return params

    def resolve(self, value: Any, path: str, used: dict[str, Any]) -> Any:
        """Replace every {"param": name} in ``value`` by the parameter's value."""
        if isinstance(value, Mapping):
            if set(value) == {"param"}:
                name = value["param"]
                if name not in self.parameters:
                    raise self.fail(path, f"unknown parameter {name!r}")
                used[name] = self.parameters[name].value
                return self.parameters[name].value
            return {k: self.resolve(v, f"{path}.{k}", used) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, f"{path}[{i}]", used) for i, v in enumerate(value)]
        return value

    # -- value sets and questions ----------------------------------------------------

    def _value_sets(self) -> None:
        for i, vs in enumerate(self.doc["valueSets"]):
            path = f"$.valueSets[{i}]"
            if vs["id"] in self.value_sets:
                raise self.fail(f"{path}.id", f"duplicate value set id {vs['id']!r}")
            for j, row in enumerate(vs.get("exclude") or []):
                if row.get("match", "exact") != "exact":
                    raise self.fail(f"{path}.exclude[{j}].match", "exclusions must be exact codes")
            matcher = CodeMatcher.from_members(vs["include"], vs.get("exclude") or [])
            self.value_sets[vs["id"]] = ValueSet(vs["id"], vs["title"], vs["source"], matcher, tuple(vs["include"]))

    def check_value_sets(self, ids: Any, path: str) -> tuple[str, ...]:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise self.fail(path, "expected a list of value set ids")
        for i, vs_id in enumerate(ids):
            if vs_id not in self.value_sets:
                raise self.fail(f"{path}[{i}]", f"unknown value set {vs_id!r}")
        return tuple(ids)

    def _questions(self) -> None:
        def add(item: Mapping[str, Any], path: str) -> Question:
            if item["linkId"] in self.questions:
                raise self.fail(f"{path}.linkId", f"duplicate question linkId {item['linkId']!r}")
            children = tuple(add(c, f"{path}.items[{k}]") for k, c in enumerate(item.get("items") or []))
            question = Question(
                item["linkId"],
                item["text"],
                item["type"],
                tuple(item.get("options") or []),
                bool(item.get("repeats")),
                children,
                tuple(item.get("enableWhen") or []),
                item.get("unit"),
                item.get("min"),
                item.get("max"),
            )
            self.questions[item["linkId"]] = question
            return question

        for i, item in enumerate(self.doc["questions"]):
            add(item, f"$.questions[{i}]")
        for question in self.questions.values():
            for j, cond in enumerate(question.enable_when):
                if cond["question"] not in self.questions:
                    raise self.fail(
                        f"$.questions (linkId {question.link_id}).enableWhen[{j}].question",
                        f"unknown question linkId {cond['question']!r}",
                    )

    def check_question(self, link_id: Any, path: str) -> str:
        if link_id not in self.questions:
            raise self.fail(path, f"unknown question linkId {link_id!r}")
        return str(link_id)

    # -- criteria --------------------------------------------------------------------
