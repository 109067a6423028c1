"""Turn a CarePath document (already parsed JSON) into a validated, compiled CarePath.

Validation happens here, once, when the CarePath loads: the JSON Schema first,
then what a schema cannot say (operators exist, their arguments fit, value
sets and questions referenced exist, ids are unique, references resolve).
Every failure raises :class:`InvalidCarePathError` naming the JSON path at
fault, so a content author can fix a file without reading engine code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from cds_server.engine.model import (
    AnswerSpec,
    CarePath,
    Disambiguation,
    Group,
    Leaf,
    Node,
    Parameter,
    Question,
    Recognition,
    Ref,
    Service,
    ValueSet,
)
from cds_server.engine.operators import REGISTRY
from fhir_mappings.codes import CodeMatcher

FORMAT_VERSION = 1


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


def compile_carepath(
    doc: Any, schema: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, source: str = "CarePath"
) -> CarePath:
    """Validate ``doc`` against ``schema`` and the operator registry, and compile it.

    ``overrides`` replaces parameter values (a payer's own policy choices);
    an override for a parameter the CarePath does not declare is an error.

    :raises InvalidCarePathError: with the JSON path of the first fault found.
    """
    if not isinstance(doc, Mapping):
        raise InvalidCarePathError("$", "a CarePath must be a JSON object", source)
    if doc.get("formatVersion") != FORMAT_VERSION:
        raise InvalidCarePathError(
            "$.formatVersion",
            f"unsupported format version {doc.get('formatVersion')!r} (expected {FORMAT_VERSION})",
            source,
        )
    _check_schema(doc, schema, source)
    return _Compiler(doc, overrides or {}, source).build()


MAX_REPORTED = 50  # schema faults listed at once; past this the file likely has a structural mistake


def _check_schema(doc: Mapping[str, Any], schema: Mapping[str, Any], source: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(doc))
    if not errors:
        return
    first = jsonschema.exceptions.best_match(errors)
    head = (first.json_path, _short(first.message))
    rest = sorted({(e.json_path, _short(e.message)) for e in errors} - {head}, key=lambda p: p[0])
    raise InvalidCarePathError(first.json_path, _short(first.message), source, rest[: MAX_REPORTED - 1])


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


class _Compiler:
    """One compilation: holds the document, resolved parameters and what was seen so far."""

    def __init__(self, doc: Mapping[str, Any], overrides: Mapping[str, Any], source: str) -> None:
        self.doc = doc
        self.source = source
        self.parameters = self._parameters(overrides)
        self.value_sets: dict[str, ValueSet] = {}
        self.questions: dict[str, Question] = {}
        self.nodes: dict[str, Node] = {}
        self.refs: list[tuple[str, str]] = []
        self.disabled = self._disabled_ids()
        self.combination_components: set[str] = set()

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
        """Return ids of criteria switched off by parameters, with everything inside them."""
        disabled: set[str] = set()

        def walk(node: Any, off: bool) -> None:
            if not isinstance(node, Mapping):
                return
            flag = node.get("enabledBy")
            if isinstance(flag, Mapping) and self.parameters.get(str(flag.get("param"))) is not None:
                off = off or self.parameters[str(flag["param"])].value is False
            if off and isinstance(node.get("id"), str):
                disabled.add(node["id"])
            for key in ("all", "any"):
                for child in node.get(key) or []:
                    walk(child, off)
            walk(node.get("not"), off)

        refs: dict[str, str] = {}

        def collect(node: Any) -> None:
            if not isinstance(node, Mapping):
                return
            if isinstance(node.get("ref"), str) and isinstance(node.get("id"), str):
                refs[node["id"]] = node["ref"]
            for key in ("all", "any"):
                for child in node.get(key) or []:
                    collect(child)
            collect(node.get("not"))

        for service in self.doc["services"]:
            for node in service["criteria"].values():
                walk(node, False)
                collect(node)
        changed = True
        while changed:  # a reference to a switched-off criterion is switched off too
            changed = False
            for node_id, target in refs.items():
                if target in disabled and node_id not in disabled:
                    disabled.add(node_id)
                    changed = True
        return disabled

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
            raise self.fail(f"{path}.args{error.json_path[1:]}", _short(error.message))
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

    def service(self, raw: Mapping[str, Any], path: str, ids: set[str]) -> Service:
        if raw["id"] in ids:
            raise self.fail(f"{path}.id", f"duplicate service id {raw['id']!r}")
        ids.add(raw["id"])
        order_rows = [c for c in raw["codes"] if c.get("role", "order") == "order"]
        if not order_rows:
            raise self.fail(f"{path}.codes", "a service needs at least one code with role 'order'")
        groups = {
            kind: self.node(node, f"{path}.criteria.{kind}")
            for kind, node in raw["criteria"].items()
            if self.enabled(node, f"{path}.criteria.{kind}")
        }
        selection = self.node(raw["selection"], f"{path}.selection") if "selection" in raw else None
        dis = raw.get("disambiguation")
        disambiguation = None
        if dis:
            self.check_question(dis["linkId"], f"{path}.disambiguation.linkId")
            disambiguation = Disambiguation(
                dis["linkId"], dis["answer"], tuple(dis.get("textPatterns") or []), tuple(dis.get("notPatterns") or [])
            )
        auto = self.resolve(raw.get("autoApproval", True), f"{path}.autoApproval", {})
        if not isinstance(auto, bool):
            raise self.fail(f"{path}.autoApproval", "must resolve to a boolean")
        return Service(
            raw["id"],
            raw["title"],
            raw["cite"],
            CodeMatcher.from_members(order_rows),
            tuple(raw["codes"]),
            groups,
            selection,
            disambiguation,
            auto,
            tuple(a for a in raw.get("alternatives") or [] if not self._switched_off(a)),
            self._recognition(raw.get("recognisedBy"), f"{path}.recognisedBy"),
        )

    def _recognition(self, raw: Mapping[str, Any] | None, path: str) -> Recognition | None:
        if not raw:
            return None
        ids = self.check_value_sets(raw.get("valueSets") or [], f"{path}.valueSets")
        matcher = CodeMatcher()
        for vs_id in ids:
            matcher = matcher.union(self.value_sets[vs_id].matcher)
        text = tuple(tuple(w.lower() for w in group) for group in raw.get("text") or [])
        return Recognition(matcher, text)

    def _switched_off(self, alternative: Mapping[str, Any]) -> bool:
        """An alternative that depends on a switched-off criterion is switched off with it."""
        return any(cond.get("criterion") in self.disabled for cond in alternative.get("when") or [])

    def _check_alternatives(self, services: tuple[Service, ...]) -> None:
        for i, service in enumerate(services):
            for j, alt in enumerate(service.alternatives):
                path = f"$.services[{i}].alternatives[{j}]"
                for k, cond in enumerate(alt["when"]):
                    if cond["criterion"] not in self.nodes:
                        raise self.fail(f"{path}.when[{k}].criterion", f"unknown criterion {cond['criterion']!r}")
                needs_code = alt["kind"] in ("replace", "companion")
                if needs_code and "code" not in alt:
                    raise self.fail(path, f"a {alt['kind']} alternative needs a code")
                if alt["kind"] == "set-location" and "location" not in alt:
                    raise self.fail(path, "a set-location alternative needs a location")
                if alt["kind"] == "split-session":
                    if "codesFrom" not in alt:
                        raise self.fail(path, "a split-session alternative needs codesFrom")
                    self.check_value_sets([alt["codesFrom"]], f"{path}.codesFrom")

    # -- whole CarePath ----------------------------------------------------------------

    def _facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = self.resolve(self.doc["facts"], "$.facts", {})
        if "symptomOnset" in facts:
            self.check_value_sets(facts["symptomOnset"]["indexValueSets"], "$.facts.symptomOnset.indexValueSets")
            if facts["symptomOnset"].get("answer"):
                self.check_question(facts["symptomOnset"]["answer"], "$.facts.symptomOnset.answer")
        if "painScores" in facts:
            self.check_value_sets(facts["painScores"]["valueSets"], "$.facts.painScores.valueSets")
        if "conservativeCare" in facts:
            self._conservative_care_facts(facts["conservativeCare"])
        if "regions" in facts:
            self._region_facts(facts["regions"])
        return facts

    def _conservative_care_facts(self, care: Mapping[str, Any]) -> None:
        for name, spec in care["components"].items():
            base = f"$.facts.conservativeCare.components.{name}"
            for cls, ids in spec["classes"].items():
                self.check_value_sets(ids, f"{base}.classes.{cls}")
            for cls, ids in (spec.get("routes") or {}).items():
                if cls not in spec["classes"]:
                    raise self.fail(f"{base}.routes.{cls}", f"no class {cls!r} in this component")
                self.check_value_sets(ids, f"{base}.routes.{cls}")
            for role, link in (spec.get("answers") or {}).items():
                self.check_question(link, f"{base}.answers.{role}")
        for role, link in care["answers"].items():
            self.check_question(link, f"$.facts.conservativeCare.answers.{role}")

    def _region_facts(self, regions: Mapping[str, Any]) -> None:
        for name, ids in regions["regions"].items():
            self.check_value_sets(ids, f"$.facts.regions.regions.{name}")
        if regions["default"] not in regions["regions"]:
            raise self.fail("$.facts.regions.default", "default region must be one of the regions")
        if regions.get("answer"):
            self.check_question(regions["answer"], "$.facts.regions.answer")

    def build(self) -> CarePath:
        doc = self.doc
        self._value_sets()
        self._questions()
        facts = self._facts()
        cohort_ids = self.check_value_sets(
            self.resolve(doc["cohort"]["valueSets"], "$.cohort.valueSets", {}), "$.cohort.valueSets"
        )
        ids: set[str] = set()
        services = tuple(self.service(s, f"$.services[{i}]", ids) for i, s in enumerate(doc["services"]))
        self._check_refs()
        self._check_alternatives(services)
        cohort = CodeMatcher()
        for vs_id in cohort_ids:
            cohort = cohort.union(self.value_sets[vs_id].matcher)
        return CarePath(
            id=doc["id"],
            version=doc["version"],
            title=doc["title"],
            effective=doc["effective"],
            source=doc["source"],
            parameters=self.parameters,
            value_sets=self.value_sets,
            cohort=cohort,
            cohort_value_sets=cohort_ids,
            facts=facts,
            services=services,
            questions=self.questions,
            nodes=self.nodes,
            questionnaire_base=doc["questionnaire"]["canonicalBase"],
            document=doc,
        )
