"""Turn a CarePath document (already parsed JSON) into a validated, compiled CarePath.

Validation happens here, once, when the CarePath loads: the JSON Schema first,
then what a schema cannot say (operators exist, their arguments fit, value
sets and questions referenced exist, ids are unique, references resolve).
Every failure raises :class:`InvalidCarePathError` naming the JSON path at
fault, so a content author can fix a file without reading engine code.

The compilation is split by what it compiles: ``compile_base`` (state, errors,
parameters, value sets, questions), ``compile_criteria`` (criteria) and this
module (services, alternatives, facts, and the compiled CarePath).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema

from cds_server.engine.compile_base import InvalidCarePathError, short
from cds_server.engine.compile_criteria import CriteriaCompiler
from cds_server.engine.model import (
    CarePath,
    Disambiguation,
    Node,
    Question,
    Recognition,
    Service,
    ValueSet,
)
from fhir_mappings.codes import CodeMatcher

FORMAT_VERSION = 1

__all__ = ["FORMAT_VERSION", "InvalidCarePathError", "compile_carepath"]


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
    head = (first.json_path, short(first.message))
    rest = sorted({(e.json_path, short(e.message)) for e in errors} - {head}, key=lambda p: p[0])
    raise InvalidCarePathError(first.json_path, short(first.message), source, rest[: MAX_REPORTED - 1])


class _Compiler(CriteriaCompiler):
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
