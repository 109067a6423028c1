"""What an invocation record keeps: enough for audit, nothing more (CRD ``sec-6``, ``found-37``).

The payer must be able to show what it was asked and what it answered; it does
not need a second copy of the patient's chart. So the record keeps the request
envelope and its context (the orders decided, in full) but, for each prefetched
record set, only which resources were seen (``Type/id`` and ``meta.versionId``)
and a SHA-256 digest of the exact JSON received, so a copy produced later can be
proven to be the one the decision saw. The decision itself (with the evidence
each criterion used, by reference) is kept with its assertion. Access tokens are
never stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from fhir_mappings.codes import arr, obj

MAX_REFS = 500  # a summary lists at most this many references per prefetch key


def audit_copy(body: Mapping[str, Any]) -> dict[str, Any]:
    """Return the request as it is kept: token dropped, prefetched records summarised."""
    kept = dict(body)
    auth = kept.get("fhirAuthorization")
    if isinstance(auth, Mapping):
        kept["fhirAuthorization"] = {k: v for k, v in auth.items() if k != "access_token"}
    prefetch = kept.get("prefetch")
    if isinstance(prefetch, Mapping):
        kept["prefetch"] = {str(key): summarise(value) for key, value in prefetch.items()}
    return kept


def summarise(value: Any) -> dict[str, Any] | None:
    """Summarise one prefetch value: its type, the references it held and a digest of its JSON."""
    if value is None:
        return None
    resource = obj(value)
    resources = [obj(e).get("resource") for e in arr(resource.get("entry"))] if "entry" in resource else [value]
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
    """SHA-256 of the value's canonical JSON (sorted keys, no spaces): stable across key order."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _ref(resource: Mapping[str, Any]) -> str:
    ref = f"{resource.get('resourceType')}/{resource.get('id')}"
    version = obj(resource.get("meta")).get("versionId")
    return f"{ref}/_history/{version}" if isinstance(version, str) else ref
