"""Stage 3, the record: the Coverage and the patient's history, from the prefetch or the EHR's FHIR server.

Also says when the history is incomplete for technical reasons (the decision is then
indeterminate, never a guess) and refuses a call whose Coverage cannot be had.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cds_server.errors import DataUnavailable, Issue
from cds_server.pipeline.call import Call, Runtime
from cds_server.pipeline.coverage import CoverageCheck, select_coverage
from cds_server.pipeline.fhir_client import FhirError
from cds_server.pipeline.orders import governed
from cds_server.pipeline.prefetch import HISTORY_KEYS, PatientData, ReferencedMedications, resolve, templates_for
from fhir_mappings.codes import arr
from fhir_mappings.orders import Order


def gather(runtime: Runtime, call: Call, orders: Sequence[Order]) -> PatientData:
    """Get the Coverage and, when some order needs a decision, the patient's history."""
    keys = ("coverage", *HISTORY_KEYS) if governed(runtime.carepaths, orders) else ("coverage", "patient")
    prefetch = call.body.get("prefetch") or {}
    medications = ReferencedMedications(call.client, runtime.pool)
    history = "medicationRequests" in keys
    data = resolve(
        templates_for(call.service),
        keys,
        call.context,
        prefetch,
        call.client,
        runtime.pool,
        on_fetched=medications.start if history else None,
    )  # the Medications a search names are read while the other searches run
    if history:
        medications.finish(data)
    _supporting_info(call, orders, data)
    return data


def _supporting_info(call: Call, orders: Sequence[Order], data: PatientData) -> None:
    """Add documentation the orders point to (``supportingInfo``): contained, already known, or read from the EHR.

    This is how a completed DTR QuestionnaireResponse reaches the next signing when the
    EHR attaches it to the order rather than storing it where the prefetch search finds it.
    """
    known = {f"{r.get('resourceType')}/{r.get('id')}" for r in data.all_resources()}
    found: list[Mapping[str, Any]] = []
    for order in orders:
        contained = {c.get("id"): c for c in arr(order.raw.get("contained")) if isinstance(c, Mapping)}
        for info in arr(order.raw.get("supportingInfo")):
            ref = info.get("reference") if isinstance(info, Mapping) else None
            if not isinstance(ref, str):
                continue
            if ref.startswith("#") and ref[1:] in contained:
                found.append(contained[ref[1:]])
            elif ref.startswith("QuestionnaireResponse/") and ref not in known:
                fetched = _read_supporting(call, ref, data)
                if fetched is not None:
                    found.append(fetched)
    if found:
        data.resources["supportingInfo"] = found


def _read_supporting(call: Call, ref: str, data: PatientData) -> Mapping[str, Any] | None:
    if call.client is None:
        data.unavailable["supportingInfo"] = f"not prefetched and no fhirServer to read {ref} from"
        return None
    try:
        return call.client.read(ref)
    except FhirError as exc:
        data.unavailable["supportingInfo"] = str(exc)
        return None


def check_coverage(runtime: Runtime, call: Call, data: PatientData) -> CoverageCheck:
    """Return the call's single Coverage.

    :raises DataUnavailable: the Coverage could not be obtained at all (412).
    :raises CoverageProblem: none, several, or a payer this endpoint does not serve (400).
    """
    if "coverage" in data.unavailable:
        raise DataUnavailable(
            "The patient's Coverage could not be obtained", [Issue(data.unavailable["coverage"], "$.prefetch.coverage")]
        )
    return select_coverage(
        data.resources.get("coverage", []), call.context["patientId"], runtime.settings["PAYER_IDENTIFIERS"]
    )


def history_problem(data: PatientData) -> str | None:
    """Return why the history is incomplete for technical reasons, or None.

    :raises DataUnavailable: history neither prefetched nor queryable (412).
    """
    missing = {k: why for k, why in data.unavailable.items() if k != "coverage"}
    if not missing:
        return None
    unreachable = [k for k, why in missing.items() if why.startswith("not prefetched and no fhirServer")]
    if unreachable:
        raise DataUnavailable(
            "Required patient data was not prefetched and there is no FHIR server to query",
            [Issue(f"prefetch key {k!r} is missing", f"$.prefetch.{k}") for k in unreachable],
        )
    return "The patient's record could not be read from the EHR: " + "; ".join(sorted(set(missing.values())))
