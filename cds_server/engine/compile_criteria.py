"""Compiling criteria: nodes, leaves and their operator arguments, answers, switched-off criteria, references.

Checks what a JSON Schema cannot say about a criterion: its operator exists and
its arguments fit the operator's schema, the value sets, questions and
parameters it names exist, its text's placeholders resolve, and every ``ref``
points at a criterion that exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jsonschema

from cds_server.engine.compile_base import CompilerBase, short
from cds_server.engine.model import (
    AnswerSpec,
    Group,
    Leaf,
    Node,
    Ref,
)
from cds_server.engine.operators import REGISTRY


class CriteriaCompiler(CompilerBase):
    """The criteria part of a compilation."""

    def node(self, raw: Mapping[str, Any], path: str) -> Node:
        node_id = raw["id"]
        if node_id in self.nodes:
            raise self.fail(f"{path}.id", f"duplicate criterion id {node_id!r}")
        if "op" in raw:
            built: Node = self.leaf(raw, path)
        elif "ref" in raw:
            self.refs.append((raw["ref"], f"{path}.ref"))
            built = Ref(node_id, self.text(raw["text"], f"{path}.text"), raw["cite"], raw["ref"])
        else:
            op = next(k for k in ("all", "any", "not") if k in raw)
            parts = raw[op] if op != "not" else [raw["not"]]
            suffix = (lambda k: f".{op}[{k}]") if op != "not" else (lambda k: ".not")
            children = tuple(
                self.node(child, f"{path}{suffix(k)}")
                for k, child in enumerate(parts)
                if self.enabled(child, f"{path}{suffix(k)}")
            )
            if not children:
                raise self.fail(path, "every part of this criterion is switched off by its parameters")
            built = Group(node_id, self.text(raw["text"], f"{path}.text"), raw["cite"], op, children)
        self.nodes[node_id] = built
        return built

    def enabled(self, raw: Mapping[str, Any], path: str) -> bool:
        """Return False for a criterion switched off by its ``enabledBy`` parameter, or a ref to one."""
        if "ref" in raw and raw["ref"] in self.disabled:
            return False
        if "enabledBy" not in raw:
            return True
        value = self.resolve(raw["enabledBy"], f"{path}.enabledBy", {})
        if not isinstance(value, bool):
            raise self.fail(f"{path}.enabledBy", "must resolve to a boolean")
        return value

    def _disabled_ids(self) -> set[str]:
        """Return ids of criteria switched off by parameters, with everything inside them and every ref to them."""
        disabled: set[str] = set()
        refs: dict[str, str] = {}
        for service in self.doc["services"]:
            for node in service["criteria"].values():
                self._mark_disabled(node, False, disabled)
                _references(node, refs)
        changed = True
        while changed:  # a reference to a switched-off criterion is switched off too
            changed = False
            for node_id, target in refs.items():
                if target in disabled and node_id not in disabled:
                    disabled.add(node_id)
                    changed = True
        return disabled

    def _mark_disabled(self, node: Any, off: bool, disabled: set[str]) -> None:
        """Add to ``disabled`` the ids of the criteria in ``node`` an ``enabledBy`` parameter switches off."""
        if not isinstance(node, Mapping):
            return
        flag = node.get("enabledBy")
        if isinstance(flag, Mapping) and self.parameters.get(str(flag.get("param"))) is not None:
            off = off or self.parameters[str(flag["param"])].value is False
        if off and isinstance(node.get("id"), str):
            disabled.add(node["id"])
        for child in _raw_children(node):
            self._mark_disabled(child, off, disabled)

    def text(self, raw: str, path: str) -> str:
        """Fill ``{parameter}`` placeholders in a criterion's text with the values in force."""

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.parameters:
                raise self.fail(path, f"unknown parameter {name!r} in text")
            found = self.parameters[name].value
            return f"{found:g}" if isinstance(found, float) else str(found)

        return re.sub(r"\{([a-z][A-Za-z0-9]*)\}", value, raw)

    def leaf(self, raw: Mapping[str, Any], path: str) -> Leaf:
        op = raw["op"]
        if op not in REGISTRY:
            raise self.fail(f"{path}.op", f"unknown operator {op!r} (known: {', '.join(sorted(REGISTRY))})")
        used: dict[str, Any] = {}
        args = self.resolve(raw.get("args") or {}, f"{path}.args", used)
        for fact in REGISTRY[op].facts:
            if fact not in self.doc["facts"]:
                raise self.fail(
                    f"{path}.op", f"operator {op!r} needs the facts.{fact} settings, which this CarePath lacks"
                )
        validator = jsonschema.Draft202012Validator(REGISTRY[op].schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(args))
        if error is not None:
            raise self.fail(f"{path}.args{error.json_path[1:]}", short(error.message))
        self._check_leaf_refs(args, f"{path}.args")
        answer = self.answer(raw.get("answer"), f"{path}.answer", used)
        questions = [self.check_question(q, f"{path}.questions[{i}]") for i, q in enumerate(raw.get("questions") or [])]
        if answer and answer.link_id not in questions:
            questions.insert(0, answer.link_id)
        group = args.get("answerGroup")
        if not questions and isinstance(group, Mapping):
            # A history count the record cannot settle is settled by documenting the history itself.
            questions.append(self.check_question(group.get("linkId"), f"{path}.args.answerGroup.linkId"))
        text = self.text(raw["text"], f"{path}.text")
        return Leaf(raw["id"], text, raw["cite"], op, args, answer, tuple(questions), raw.get("silence"), used)

    def _check_leaf_refs(self, args: Mapping[str, Any], path: str) -> None:
        for key, value in args.items():
            if key == "valueSets" or key.endswith("ValueSets"):
                self.check_value_sets(value, f"{path}.{key}")
            elif key == "answerGroup":
                self.check_question(value["linkId"], f"{path}.answerGroup.linkId")
            elif key == "answer":
                self.check_question(value, f"{path}.answer")
            elif key == "combination":
                self._check_combination(value, f"{path}.combination")

    def _check_combination(self, expr: Any, path: str) -> None:
        components = set(self.doc["facts"].get("conservativeCare", {}).get("components", {}))
        if isinstance(expr, str):
            if expr not in components:
                raise self.fail(path, f"unknown component {expr!r} (known: {', '.join(sorted(components))})")
            return
        if not isinstance(expr, Mapping) or len(expr) != 1 or next(iter(expr)) not in ("all", "any"):
            raise self.fail(path, 'expected a component name or {"all": [...]} / {"any": [...]}')
        key = next(iter(expr))
        if not isinstance(expr[key], list) or not expr[key]:
            raise self.fail(f"{path}.{key}", "expected a non-empty list")
        for i, part in enumerate(expr[key]):
            self._check_combination(part, f"{path}.{key}[{i}]")

    def answer(self, raw: Any, path: str, used: dict[str, Any]) -> AnswerSpec | None:
        if raw is None:
            return None
        raw = self.resolve(raw, path, used)
        self.check_question(raw["linkId"], f"{path}.linkId")
        readings = [k for k in ("trueWhen", "compare", "weeksSince") if k in raw]
        if len(readings) > 1:
            raise self.fail(path, f"give one of trueWhen, compare, weeksSince (got {', '.join(readings)})")
        question = self.questions[raw["linkId"]]
        expected = {
            "trueWhen": ("choice", "open-choice"),
            "compare": ("integer", "decimal", "quantity"),
            "weeksSince": ("date",),
        }.get(readings[0] if readings else "", ("boolean",))
        if question.type not in expected:
            raise self.fail(
                f"{path}.linkId", f"question {question.link_id!r} is {question.type}, expected {'/'.join(expected)}"
            )
        true_when = frozenset(raw["trueWhen"]) if "trueWhen" in raw else None
        compare = (raw["compare"][0], float(raw["compare"][1])) if "compare" in raw else None
        weeks = (raw["weeksSince"][0], float(raw["weeksSince"][1])) if "weeksSince" in raw else None
        return AnswerSpec(raw["linkId"], true_when, None, compare, weeks)

    def _check_refs(self) -> None:
        for target, path in self.refs:
            if target not in self.nodes:
                raise self.fail(path, f"reference to unknown criterion {target!r}")
        for node_id, node in self.nodes.items():
            seen: set[str] = set()
            current: Node = node
            while isinstance(current, Ref):
                if current.id in seen:
                    raise self.fail("$.services", f"criterion {node_id!r} refers to itself through references")
                seen.add(current.id)
                current = self.nodes[current.target]

    # -- services -------------------------------------------------------------------


def _raw_children(node: Mapping[str, Any]) -> list[Any]:
    """The parts of a raw criterion group (``all``, ``any``, ``not``), in that order."""
    return [*(node.get("all") or []), *(node.get("any") or []), node.get("not")]


def _references(node: Any, refs: dict[str, str]) -> None:
    """Collect ``{id: target}`` of every ``ref`` criterion in ``node``."""
    if not isinstance(node, Mapping):
        return
    if isinstance(node.get("ref"), str) and isinstance(node.get("id"), str):
        refs[node["id"]] = node["ref"]
    for child in _raw_children(node):
        _references(child, refs)
