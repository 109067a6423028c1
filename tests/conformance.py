"""Conformance checks from cds-hooks-crd.md §7, run on every response the tests see.

Each function returns a list of problems (empty = conformant) so a test can
show all of them at once. Rule numbers refer to the checklist in §7.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
TOKEN = re.compile(r"\{\{([^}]*)\}\}")
CARD_TYPE_SYSTEMS = (
    "http://terminology.hl7.org/CodeSystem/cdshooks-card-type",
    "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
)
COVERED = {"covered", "not-covered", "conditional", "indeterminate"}
PA = {"no-auth", "auth-needed", "satisfied", "performpa", "conditional", "indeterminate"}
DOC = {"clinical", "admin", "patient", "conditional", "indeterminate"}
PURPOSE = {"withpa", "withclaim", "withorder", "retain-doc", "OTH"}
INFO = {"performer", "location", "timeframe", "contract-window", "detail-code", "OTH"}
REASON_CODES = {
    "gold-card",
    "no-member-found",
    "no-active-coverage",
    "coverage-not-found",
    "auth-out-network",
    "technical",
}
SUB_URLS = {
    "coverage",
    "covered",
    "pa-needed",
    "doc-needed",
    "doc-purpose",
    "info-needed",
    "billingCode",
    "reason",
    "detail",
    "dependency",
    "questionnaire",
    "date",
    "coverage-assertion-id",
    "satisfied-pa-id",
    "contact",
    "expiry-date",
}
PRIMARY = {"order-sign", "order-dispatch", "appointment-book"}
NOT_IDS = {"None", "null", "undefined", "nan", "NaN"}  # a valid FHIR id that betrays a bug upstream
CRD_TYPES = {
    "Appointment",
    "CommunicationRequest",
    "DeviceRequest",
    "Encounter",
    "MedicationRequest",
    "NutritionOrder",
    "ServiceRequest",
    "VisionPrescription",
}


def empty_values(value: Any, path: str = "$", allowed: tuple[str, ...] = ()) -> list[str]:
    """Rule 7/43: no null, "", {} or [] anywhere except the allowed paths."""
    problems = []
    if path not in allowed and (value is None or value == "" or value == {} or value == []):
        problems.append(f"{path} is empty or null")
    if isinstance(value, Mapping):
        for key, item in value.items():
            problems += empty_values(item, f"{path}.{key}", allowed)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += empty_values(item, f"{path}[{i}]", allowed)
    return problems


def check_discovery(doc: Mapping[str, Any], token_fields: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Rules 1-20 on a discovery document; ``token_fields`` maps hook -> prefetch-eligible context fields."""
    problems = empty_values(doc, "$", ("$.services",))
    services = doc.get("services")
    if not isinstance(services, list):
        return [*problems, "services is not an array"]
    seen = set()
    for i, svc in enumerate(services):
        where = f"services[{i}]"
        for key in ("id", "hook", "description", "title"):
            if not isinstance(svc.get(key), str) or not svc[key]:
                problems.append(f"{where}.{key} missing")
        if (svc.get("id"), svc.get("hook")) in seen:
            problems.append(f"{where}: duplicate id/hook")
        seen.add((svc.get("id"), svc.get("hook")))
        for key, template in (svc.get("prefetch") or {}).items():
            for token in TOKEN.findall(template):
                field = token.strip().removeprefix("context.")
                if not token.strip().startswith("context.") or field not in token_fields.get(svc.get("hook"), ()):
                    problems.append(
                        f"{where}.prefetch.{key}: token {{{{{token}}}}} is not a prefetch field of {svc.get('hook')}"
                    )
        ext = svc.get("extension") or {}
        versions = ext.get("davinci-crd.version")
        if not (isinstance(versions, list) and versions and all(re.match(r"^\d+\.\d+$", v) for v in versions)):
            problems.append(f"{where}: davinci-crd.version missing or malformed")
        options = ext.get("davinci-crd.configuration-options") or []
        for field in ("code", "name", "description"):
            values = [o.get(field) for o in options]
            if len(values) != len(set(values)):
                problems.append(f"{where}: configuration option {field}s are not unique")
        for option in options:
            kind = {"boolean": bool, "integer": int}.get(option.get("type"))
            if kind is None or type(option.get("default")) is not kind:
                problems.append(f"{where}: option {option.get('code')} has a bad type/default")
        if "coverage" in (svc.get("prefetch") or {}) and "status=active" not in svc["prefetch"]["coverage"]:
            problems.append(f"{where}: coverage prefetch does not ask for active coverage")
    return problems


def check_outcome(body: Any) -> list[str]:
    """Rule 52: error bodies are OperationOutcomes."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return ["error body is not an OperationOutcome"]
    issues = body.get("issue")
    if not isinstance(issues, list) or not issues:
        return ["OperationOutcome has no issue"]
    return [
        f"issue {i} lacks severity/code" for i, x in enumerate(issues) if not x.get("severity") or not x.get("code")
    ]


def _subs(ext: Mapping[str, Any], url: str) -> list[Mapping[str, Any]]:
    return [p for p in ext.get("extension") or [] if p.get("url") == url]


def check_coverage_information(ext: Mapping[str, Any], hook: str, where: str) -> list[str]:
    """Rules 108-137 on one coverage-information extension."""
    problems = []
    if any(k.startswith("value") for k in ext):
        problems.append(f"{where}: the extension has a value[x]")
    for part in ext.get("extension") or []:
        if part.get("url") not in SUB_URLS:
            problems.append(f"{where}: unknown sub-extension {part.get('url')}")
    one = {u: _subs(ext, u) for u in SUB_URLS}
    for url in ("coverage", "covered", "date", "coverage-assertion-id"):
        if len(one[url]) != 1:
            problems.append(f"{where}: needs exactly one {url}")
    for url in ("pa-needed", "satisfied-pa-id", "expiry-date"):
        if len(one[url]) > 1:
            problems.append(f"{where}: more than one {url}")
    ref = (one["coverage"][0].get("valueReference") or {}).get("reference", "") if one["coverage"] else ""
    if not re.search(r"(^|/)Coverage/[A-Za-z0-9\-.]+$", ref) or ref.rsplit("/", 1)[-1] in NOT_IDS:
        problems.append(f"{where}: coverage reference {ref!r}")
    covered = one["covered"][0].get("valueCode") if one["covered"] else None
    pa = one["pa-needed"][0].get("valueCode") if one["pa-needed"] else None
    docs = [p.get("valueCode") for p in one["doc-needed"]]
    purposes = [p.get("valueCode") for p in one["doc-purpose"]]
    infos = [p.get("valueCode") for p in one["info-needed"]]
    reasons = [p.get("valueCodeableConcept") or {} for p in one["reason"]]
    if covered not in COVERED:
        problems.append(f"{where}: covered {covered!r}")
    if pa is not None and pa not in PA:
        problems.append(f"{where}: pa-needed {pa!r}")
    problems += [f"{where}: doc-needed {d!r}" for d in docs if d not in DOC]
    problems += [f"{where}: doc-purpose {d!r}" for d in purposes if d not in PURPOSE]
    problems += [f"{where}: info-needed {d!r}" for d in infos if d not in INFO]
    for reason in reasons:
        codes = {c.get("code") for c in reason.get("coding") or []}
        if not (codes & REASON_CODES) and not reason.get("text"):
            problems.append(f"{where}: reason without a known code needs text (crd-ci-q7)")
    date_ = one["date"][0].get("valueDate", "") if one["date"] else ""
    if not re.match(r"^\d{4}-\d{2}-\d{2}$", date_):
        problems.append(f"{where}: date {date_!r}")
    if one["expiry-date"] and one["expiry-date"][0].get("valueDate", "") < date_:
        problems.append(f"{where}: expiry-date before date")
    if one["coverage-assertion-id"] and not one["coverage-assertion-id"][0].get("valueString"):
        problems.append(f"{where}: empty coverage-assertion-id")
    if covered == "not-covered" and pa is not None:
        problems.append(f"{where}: not-covered with pa-needed (crd-ci-q2)")
    if "conditional" in {covered, pa, *docs} and not infos:
        problems.append(f"{where}: conditional without info-needed (crd-ci-q3)")
    if (pa in ("satisfied", "no-auth") or covered == "not-covered") and "withpa" in purposes:
        problems.append(f"{where}: withpa with {pa} (crd-ci-q4)")
    if bool(one["satisfied-pa-id"]) != (pa == "satisfied"):
        problems.append(f"{where}: satisfied-pa-id iff satisfied (crd-ci-q5)")
    if "OTH" in infos and not reasons:
        problems.append(f"{where}: info-needed OTH without reason (crd-ci-q6)")
    if "indeterminate" in {covered, pa, *docs}:
        technical = any(
            "technical" in {c.get("code") for c in r.get("coding") or []} and r.get("text") for r in reasons
        )
        if not reasons or not technical:
            problems.append(f"{where}: indeterminate needs a technical reason with text (crd-ci-q9, resp-43)")
    if one["questionnaire"] and not docs:
        problems.append(f"{where}: questionnaire without doc-needed (crd-ci-q1)")
    if hook not in PRIMARY and {"clinical", "admin"} & set(docs):
        problems.append(f"{where}: {hook} asks for clinical/admin documentation (hook-19)")
    return problems


def _without_empties(value: Any) -> Any:
    """FHIR JSON reads "", [] and {} as absent (the service drops them from draft orders): compare without them."""
    if isinstance(value, Mapping):
        kept = {k: _without_empties(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in ("", [], {})}
    if isinstance(value, list):
        return [v for v in (_without_empties(item) for item in value) if v not in ("", [], {})]
    return value


def _without_coverage_information(resource: Mapping[str, Any]) -> dict[str, Any]:
    copy = dict(_without_empties(resource))
    rest = [e for e in copy.get("extension") or [] if e.get("url") != EXT]
    if rest:
        copy["extension"] = rest
    else:
        copy.pop("extension", None)
    return copy


def context_resources(request: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Return the request's context resources by ``Type/id``."""
    out = {}
    for field in ("draftOrders", "appointments"):
        bundle = request.get("context", {}).get(field) or {}
        for entry in bundle.get("entry") or []:
            res = entry.get("resource") or {}
            out[f"{res.get('resourceType')}/{res.get('id')}"] = res
    return out


def check_response(
    request: Mapping[str, Any], body: Mapping[str, Any], extra_targets: Mapping[str, Any] = {}
) -> list[str]:
    """Rules 41-43, 60-107 on a 200 response to ``request``."""
    hook = request.get("hook", "")
    problems = empty_values(body, "$", ("$.cards",))
    if not isinstance(body.get("cards"), list):
        return [*problems, "cards is not an array"]
    uuids = [c.get("uuid") for c in body["cards"]]
    if len(uuids) != len(set(uuids)):
        problems.append("card uuids are not unique")
    for i, card in enumerate(body["cards"]):
        problems += check_card(card, f"cards[{i}]") + check_card_kind(card, f"cards[{i}]")
    context = {**context_resources(request), **extra_targets}
    for i, action in enumerate(body.get("systemActions") or []):
        where = f"systemActions[{i}]"
        resource = action.get("resource") or {}
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        if action.get("type") != "update" or "resourceId" in action:
            problems.append(f"{where}: coverage information must be an update with a resource")
        exts = [e for e in resource.get("extension") or [] if e.get("url") == EXT]
        if not exts:
            problems.append(f"{where}: no coverage-information extension (crd-respci1)")
        for j, ext in enumerate(exts):
            problems += check_coverage_information(ext, hook, f"{where}.ext[{j}]")
        if resource.get("resourceType") not in CRD_TYPES:
            problems.append(f"{where}: {ref} is not a CRD request type (rule 101)")
        if ref not in context:
            problems.append(f"{where}: updates {ref}, which is not in the request context")
        elif _without_coverage_information(context[ref]) != _without_coverage_information(resource):
            problems.append(f"{where}: {ref} changed beyond coverage information (resp-37)")
    problems += _one_action_per_order(request, body, context)
    problems += _cards_name_their_orders(request, body)
    for i, card in enumerate(body["cards"]):
        problems += _suggestion_targets(card, context, f"cards[{i}]")
    return problems


def expected_targets(request: Mapping[str, Any], context: Mapping[str, Any]) -> set[str]:
    """Rules 104-105: the resources that must each get one coverage-information systemAction."""
    ctx = request.get("context") or {}
    hook = request.get("hook")
    if hook == "order-dispatch":
        return set(ctx.get("dispatchedOrders") or [])
    targets: set[str] = set()
    for ref, resource in context_resources(request).items():
        if resource.get("resourceType") not in CRD_TYPES:
            continue
        if hook == "appointment-book":
            based = [
                re.sub(r"/_history/[^/]+$", "", str(b.get("reference", ""))).rsplit("/", 2)[-2:]
                for b in resource.get("basedOn") or []
                if "ServiceRequest/" in str(b.get("reference", ""))
            ]
            if based:
                targets |= {"/".join(b) for b in based}
                continue
        targets.add(ref)
    return targets


def _carries_coverage_information(resource: Mapping[str, Any] | None) -> bool:
    return any(e.get("url") == EXT for e in (resource or {}).get("extension") or [])


def _one_action_per_order(request: Mapping[str, Any], body: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
    """Rule 105 (CRD hook-16, resp-29): one coverage-information systemAction per in-scope order."""
    if request.get("hook") not in PRIMARY:
        return []
    config = ((request.get("extension") or {}).get("davinci-crd.configuration")) or {}
    if config.get("coverage-info") is False:
        return []
    updated = [
        f"{(a.get('resource') or {}).get('resourceType')}/{(a.get('resource') or {}).get('id')}"
        for a in body.get("systemActions") or []
    ]
    problems = []
    for ref in sorted(expected_targets(request, context)):
        count = updated.count(ref)
        if count > 1 or (count == 0 and not _carries_coverage_information(context.get(ref))):
            problems.append(f"{ref}: {count} coverage-information systemActions, expected one (rule 105)")
    return problems


def _cards_name_their_orders(request: Mapping[str, Any], body: Mapping[str, Any]) -> list[str]:
    """Rules 80-82: no coverage-info cards; with several orders, cards say which ones they are about."""
    problems = []
    orders = {r for r, res in context_resources(request).items() if res.get("resourceType") in CRD_TYPES}
    for i, card in enumerate(body["cards"]):
        topic = ((card.get("source") or {}).get("topic") or {}).get("code")
        if topic in ("coverage-info", "unsolicited-determ"):
            problems.append(f"cards[{i}]: coverage information belongs in a systemAction, not a card (rule 80)")
        if len(orders) < 2:
            continue
        associated = (card.get("extension") or {}).get("davinci-crd.associated-resource")
        if associated is None:
            continue  # the card is about every order
        if not isinstance(associated, list) or not set(associated) <= orders:
            problems.append(f"cards[{i}]: associated-resource {associated!r} must list context orders (rule 82)")
        elif set(associated) < orders and not all(ref in str(card.get("detail", "")) for ref in associated):
            problems.append(f"cards[{i}]: the detail does not name the orders it is about (rule 81)")
    return problems


def _suggestion_targets(card: Mapping[str, Any], context: Mapping[str, Any], where: str) -> list[str]:
    """Rule 90: an update or delete suggestion targets a context resource (or a Coverage)."""
    problems = []
    for j, suggestion in enumerate(card.get("suggestions") or []):
        for k, action in enumerate(suggestion.get("actions") or []):
            resource = action.get("resource") or {}
            if action.get("type") == "update":
                target = f"{resource.get('resourceType')}/{resource.get('id')}"
            elif action.get("type") == "delete":
                target = str(action.get("resourceId"))
            else:
                continue
            if target.split("/")[0] != "Coverage" and target not in context:
                problems.append(f"{where}.suggestions[{j}].actions[{k}]: {target} is not in the context (rule 90)")
    return problems


def check_card_kind(card: Mapping[str, Any], where: str) -> list[str]:
    """Rules 92-95: each CRD response type has its shape (told apart by links, suggestions and actions)."""
    links, suggestions = card.get("links") or [], card.get("suggestions") or []
    problems = []
    external = links and not suggestions and all(link.get("type") == "absolute" for link in links)
    if external and any("appContext" in link for link in links):
        problems.append(f"{where}: external reference link with appContext (rule 92)")
    if not links and not suggestions and not card.get("detail"):
        problems.append(f"{where}: an instructions card needs detail (rule 93)")
    for j, suggestion in enumerate(suggestions):
        kinds = sorted(a.get("type") for a in suggestion.get("actions") or [])
        at = f"{where}.suggestions[{j}]"
        if "update" in kinds or "delete" in kinds:
            if kinds not in (["update"], ["create", "delete"]):
                problems.append(f"{at}: an alternate request is one update, or one delete plus one create (rule 94)")
            for action in suggestion.get("actions") or []:
                if action.get("type") == "delete" and ("resource" in action or not action.get("resourceId")):
                    problems.append(f"{at}: delete with a resource or without resourceId (rule 94)")
        elif kinds:
            for action in suggestion.get("actions") or []:
                if not action.get("resource") or "resourceId" in action:
                    problems.append(f"{at}: an additional order is a create with a resource (rule 95)")
    return problems


def check_card(card: Mapping[str, Any], where: str) -> list[str]:
    """Rules 60-82 and 92-95 on one card."""
    problems = []
    if not isinstance(card.get("summary"), str) or not card["summary"] or len(card["summary"]) >= 140:
        problems.append(f"{where}: summary missing or 140 characters or more")
    if card.get("indicator") not in ("info", "warning", "critical"):
        problems.append(f"{where}: indicator {card.get('indicator')!r}")
    source = card.get("source") or {}
    if not source.get("label"):
        problems.append(f"{where}: source.label missing")
    topic = source.get("topic") or {}
    if not topic.get("system") or not topic.get("code"):
        problems.append(f"{where}: source.topic missing (resp-5)")
    elif topic["system"] not in CARD_TYPE_SYSTEMS:
        problems.append(f"{where}: source.topic system {topic['system']}")
    if not card.get("uuid"):
        problems.append(f"{where}: uuid missing")
    suggestions = card.get("suggestions") or []
    if suggestions and card.get("selectionBehavior") not in ("at-most-one", "any"):
        problems.append(f"{where}: suggestions without selectionBehavior")
    if card.get("selectionBehavior") == "at-most-one" and sum(bool(s.get("isRecommended")) for s in suggestions) > 1:
        problems.append(f"{where}: several recommended suggestions with at-most-one")
    for j, suggestion in enumerate(suggestions):
        if not suggestion.get("uuid") or not suggestion.get("label"):
            problems.append(f"{where}.suggestions[{j}]: uuid and label required")
        for k, action in enumerate(suggestion.get("actions") or []):
            problems += _check_action(action, f"{where}.suggestions[{j}].actions[{k}]")
    for j, reason in enumerate(card.get("overrideReasons") or []):
        if not all(reason.get(k) for k in ("code", "system", "display")):
            problems.append(f"{where}.overrideReasons[{j}]: code, system and display required")
    for j, link in enumerate(card.get("links") or []):
        if not link.get("label") or not str(link.get("url", "")).startswith(("http://", "https://")):
            problems.append(f"{where}.links[{j}]: label and absolute url required")
        if link.get("type") not in ("absolute", "smart"):
            problems.append(f"{where}.links[{j}]: type")
        if "appContext" in link and link.get("type") != "smart":
            problems.append(f"{where}.links[{j}]: appContext on a non-smart link")
    return problems


def _check_action(action: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    kind = action.get("type")
    if kind not in ("create", "update", "delete"):
        problems.append(f"{where}: type {kind!r}")
    if not action.get("description"):
        problems.append(f"{where}: description required")
    if kind in ("create", "update") and not (action.get("resource") or {}).get("resourceType"):
        problems.append(f"{where}: {kind} needs a resource")
    if kind == "update" and not (action.get("resource") or {}).get("id"):
        problems.append(f"{where}: update needs the resource id")
    if kind == "delete" and (
        not re.match(r"^[A-Z][A-Za-z]+/[^/]+$", str(action.get("resourceId", ""))) or "resource" in action
    ):
        problems.append(f"{where}: delete needs resourceId and no resource")
    return problems
