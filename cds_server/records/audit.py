"""What an invocation record keeps: enough for audit, nothing more (CRD ``sec-6``, ``found-37``).

The payer must be able to show what it was asked and what it answered; it does
not need a second copy of the patient's chart. So the record keeps the request
envelope, the context's ids and references, and the orders decided in full
(with the questionnaire answers they contain; other contained resources are
dropped), but, for each prefetched record set and any other context member,
only which resources were seen (``Type/id`` and ``meta.versionId``)
and a SHA-256 digest of the exact JSON received, so a copy produced later can be
proven to be the one the decision saw. The decision itself (with the evidence
each criterion used, by reference) is kept with its assertion. Access tokens are
never stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from cds_server.records.json_text import canonical_json
from fhir_mappings.codes import arr, obj
from fhir_mappings.orders import ORDER_TYPES

MAX_REFS = 500  # a summary lists at most this many references per prefetch key


ORDER_BUNDLES = ("draftOrders", "appointments")
KEPT_CONTAINED = {"QuestionnaireResponse"}  # the documentation answers a decision may rest on


def audit_copy(body: Mapping[str, Any]) -> dict[str, Any]:
    """Return the request as it is kept: token dropped, prefetched records and extras summarised."""
    kept = dict(body)
    auth = kept.get("fhirAuthorization")
    if isinstance(auth, Mapping):
        kept["fhirAuthorization"] = {k: v for k, v in auth.items() if k != "access_token"}
    elif "fhirAuthorization" in kept:
        kept["fhirAuthorization"] = "(not an object: dropped)"  # it may be a bare token
    prefetch = kept.get("prefetch")
    if isinstance(prefetch, Mapping):
        kept["prefetch"] = {str(key): summarise(value) for key, value in prefetch.items()}
    elif prefetch is not None:
        kept["prefetch"] = summarise(prefetch)
    context = kept.get("context")
    if isinstance(context, Mapping):
        kept["context"] = {str(key): _context_member(str(key), value) for key, value in context.items()}
    elif context is not None:
        kept["context"] = summarise(context)
    return kept


def _context_member(key: str, value: Any) -> Any:
    """Ids and references stay; order bundles keep their orders; anything else is summarised."""
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return value
    if key in ORDER_BUNDLES and isinstance(value, Mapping):
        return _orders_only(value)
    return summarise(value)


def _orders_only(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The orders decided, whole (with their contained answers); other entries by reference only."""
    entries = []
    for entry in arr(bundle.get("entry")):
        resource = obj(entry).get("resource")
        if isinstance(resource, Mapping) and _type(resource) in ORDER_TYPES:
            kept = dict(resource)
            if "contained" in kept:
                kept["contained"] = [c for c in arr(kept["contained"]) if _type(obj(c)) in KEPT_CONTAINED]
                if not kept["contained"]:
                    del kept["contained"]
            entries.append({**obj(entry), "resource": kept})
        else:
            entries.append({"summary": summarise(resource)})
    out = {k: v for k, v in bundle.items() if k in ("resourceType", "type", "id")}
    return {**out, "sha256": digest(bundle), "entry": entries}


def summarise(value: Any) -> dict[str, Any] | None:
    """Summarise one prefetch value: its type, the references it held and a digest of its JSON."""
    if value is None:
        return None
    resource = obj(value)
    if isinstance(value, list):
        resources = value
    elif "entry" in resource:
        resources = [obj(e).get("resource") for e in arr(resource.get("entry"))]
    else:
        resources = [value]
    refs = [_ref(r) for r in resources if isinstance(r, Mapping)]
    summary: dict[str, Any] = {
        "resourceType": resource.get("resourceType") if isinstance(resource.get("resourceType"), str) else None,
        "sha256": digest(value),
        "count": len(refs),
        "refs": refs[:MAX_REFS],
    }
    if len(refs) > MAX_REFS:
        summary["refsTruncated"] = True
    return summary


def digest(value: Any) -> str:
    """SHA-256 of the value's canonical JSON (sorted keys, no spaces): stable across key order.

    The canonical JSON is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False, default=str)`` in UTF-8, as it always was (``json_text.canonical_json``
    writes those bytes with orjson when it can).
    """
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _ref(resource: Mapping[str, Any]) -> str:
    ref = f"{resource.get('resourceType')}/{resource.get('id')}"
    version = obj(resource.get("meta")).get("versionId")
    return f"{ref}/_history/{version}" if isinstance(version, str) else ref


def _type(resource: Mapping[str, Any]) -> str | None:
    """The resourceType when it is a string (hostile input may put anything there)."""
    value = resource.get("resourceType")
    return value if isinstance(value, str) else None
