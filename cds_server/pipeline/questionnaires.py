"""Documentation questionnaires (Da Vinci DTR) generated from a CarePath, and their pre-filled responses.

One FHIR R4 Questionnaire per service, holding exactly the items its criteria
can ask (grouped by topic, with enableWhen and required flags), versioned with
the CarePath under a stable canonical URL:
``<canonicalBase>/<carepath id>-<service id>`` and version = CarePath version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cds_server.engine import CarePath
from cds_server.engine.model import Group, Leaf, Node, Question, Ref, Service

_TYPES = {
    "boolean": "boolean",
    "choice": "choice",
    "open-choice": "open-choice",
    "integer": "integer",
    "decimal": "decimal",
    "date": "date",
    "string": "string",
    "group": "group",
    "quantity": "quantity",
}


def questionnaire_id(carepath: CarePath, service: Service) -> str:
    """Return the Questionnaire's resource id (the engine matches answers by this prefix: keep in step)."""
    return f"{carepath.id}-{service.id}"


def canonical(carepath: CarePath, service: Service) -> str:
    """Return the versionless canonical URL."""
    return f"{carepath.questionnaire_base.rstrip('/')}/{questionnaire_id(carepath, service)}"


def _walk(node: Node, carepath: CarePath, seen: set[str]) -> Iterable[Leaf]:
    if node.id in seen:
        return
    seen.add(node.id)
    if isinstance(node, Leaf):
        yield node
    elif isinstance(node, Group):
        for child in node.children:
            yield from _walk(child, carepath, seen)
    elif isinstance(node, Ref):
        yield from _walk(carepath.nodes[node.target], carepath, seen)


def service_items(carepath: CarePath, service: Service) -> tuple[list[str], set[str]]:
    """Return (linkIds the service can ask, in CarePath order; linkIds that decide a criterion: required)."""
    wanted: set[str] = set()
    required: set[str] = set()
    seen: set[str] = set()
    roots = [*service.groups.values(), *([service.selection] if service.selection else [])]
    for root in roots:
        for leaf in _walk(root, carepath, seen):
            wanted.update(leaf.questions)
            group = leaf.args.get("answerGroup")
            if isinstance(group, Mapping):
                wanted.add(group["linkId"])
            if leaf.args.get("sameRegion", False) and carepath.facts.get("regions", {}).get("answer"):
                wanted.add(carepath.facts["regions"]["answer"])
            if leaf.answer:
                required.add(leaf.answer.link_id)
    if service.disambiguation:
        wanted.add(service.disambiguation.link_id)
    for question in list(carepath.questions.values()):  # items an enabled item depends on come along
        if question.link_id in wanted:
            wanted.update(c["question"] for c in question.enable_when)
    top = [q for q in carepath.document["questions"] if q["linkId"] in wanted]
    return [q["linkId"] for q in top], required


def _item(question: Question, required: set[str], system: str) -> dict[str, Any]:
    item: dict[str, Any] = {"linkId": question.link_id, "text": question.text, "type": _TYPES[question.type]}
    if question.link_id in required:
        item["required"] = True
    if question.repeats:
        item["repeats"] = True
    if question.options:
        item["answerOption"] = [
            {"valueCoding": {"system": system, "code": o["code"], "display": o["display"]}} for o in question.options
        ]
    if question.enable_when:
        item["enableWhen"] = [_enable_when(c, system) for c in question.enable_when]
        item["enableBehavior"] = "all"
    if question.items:
        item["item"] = [_item(child, required, system) for child in question.items]
    return item


def _enable_when(cond: Mapping[str, Any], system: str) -> dict[str, Any]:
    out: dict[str, Any] = {"question": cond["question"], "operator": cond["operator"]}
    if "answerCode" in cond:
        out["answerCoding"] = {"system": system, "code": cond["answerCode"]}
    else:
        out["answerBoolean"] = cond.get("answerBoolean", True)
    return out


def answer_system(carepath: CarePath) -> str:
    """The code system of the CarePath's answer options."""
    return carepath.answer_system


def build_questionnaire(carepath: CarePath, service: Service) -> dict[str, Any]:
    """Return the FHIR R4 Questionnaire for one service."""
    link_ids, required = service_items(carepath, service)
    sections: Mapping[str, str] = carepath.document["questionnaire"].get("sections", {})
    system = answer_system(carepath)
    groups: dict[str, list[dict[str, Any]]] = {}
    for link_id in link_ids:
        groups.setdefault(link_id.split(".")[0], []).append(_item(carepath.questions[link_id], required, system))
    items = [
        {"linkId": f"section-{prefix}", "text": sections.get(prefix, prefix), "type": "group", "item": children}
        for prefix, children in groups.items()
    ]
    qid = questionnaire_id(carepath, service)
    return {
        "resourceType": "Questionnaire",
        "id": qid,
        "url": canonical(carepath, service),
        "version": carepath.version,
        "name": "".join(part.capitalize() for part in qid.split("-")),
        "title": f"{carepath.title}: {service.title} — documentation",
        "status": "active",
        "subjectType": ["Patient"],
        "date": carepath.effective,
        "publisher": carepath.document["questionnaire"].get("publisher", carepath.source.get("publisher", "")),
        "description": f"What the {carepath.title} CarePath {carepath.version} needs to decide {service.title} "
        "when the record does not show it.",
        "item": items,
    }


def tailored(questionnaire: Mapping[str, Any], needed: Iterable[str]) -> dict[str, Any]:
    """Return the Questionnaire with ``required`` on exactly the items one decision still needs.

    The static Questionnaire marks every item that can decide a criterion; for one
    order most of them are already settled by the record. Same url, version and
    items, so a response to it is a response to the canonical one (the engine
    reads answers by canonical): only the ``required`` flags change.
    """
    wanted = set(needed)

    def mark(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            copy = {k: v for k, v in item.items() if k not in ("required", "item")}
            if item["linkId"] in wanted:
                copy["required"] = True
            if "item" in item:
                copy["item"] = mark(item["item"])
            out.append(copy)
        return out

    return {**questionnaire, "item": mark(questionnaire["item"])}


def all_questionnaires(carepaths: Iterable[CarePath]) -> dict[str, dict[str, Any]]:
    """Return every service's Questionnaire, by id."""
    out = {}
    for carepath in carepaths:
        for service in carepath.services:
            questionnaire = build_questionnaire(carepath, service)
            out[questionnaire["id"]] = questionnaire
    return out
