"""Stage 3, the record: the Coverage and the patient's history, from the prefetch or the EHR's FHIR server.

Also says when the history is incomplete for technical reasons (the decision is then
indeterminate, never a guess) and refuses a call whose Coverage cannot be had.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from cds_server.errors import DataUnavailable, Issue
from cds_server.pipeline.call import Call, Runtime
from cds_server.pipeline.coverage import CoverageCheck, select_coverage
from cds_server.pipeline.fhir_client import FhirError
from cds_server.pipeline.orders import governed
from cds_server.pipeline.prefetch import (
    HISTORY_KEYS,
    PatientData,
    ReferencedMedications,
    resolve,
    templates_for,
    wait_budget,
)
from fhir_mappings.codes import arr
from fhir_mappings.orders import Order


def gather(runtime: Runtime, call: Call, orders: Sequence[Order]) -> PatientData:
    """Get the Coverage and, when some order needs a decision, the patient's history.

    What a search names or misses is read as soon as that search is in, while the others run:
    the Medications of ``medicationReference``s, the QuestionnaireResponses of ``supportingInfo``.
    """
    keys = ("coverage", *HISTORY_KEYS) if governed(runtime.carepaths, orders) else ("coverage", "patient")
    prefetch = call.body.get("prefetch") or {}
    medications = ReferencedMedications(call.client, runtime.pool)
    supporting = _SupportingReads(call, orders, runtime.pool)
    history = "medicationRequests" in keys

    def fetched(key: str, resources: list[Mapping[str, Any]]) -> None:
        medications.start(key, resources)
        supporting.start(key, resources)

    data = resolve(
        templates_for(call.service),
        keys,
        call.context,
        prefetch,
        call.client,
        runtime.pool,
        on_fetched=fetched if history else None,
    )
    if history:
        medications.finish(data)
    _supporting_info(orders, data, supporting)
    return data


def _supporting_info(orders: Sequence[Order], data: PatientData, supporting: _SupportingReads) -> None:
    """Add documentation the orders point to (``supportingInfo``): contained, already known, or read from the EHR.

    This is how a completed DTR QuestionnaireResponse reaches the next signing when the
    EHR attaches it to the order rather than storing it where the prefetch search finds it.
    """
    known = {f"{r.get('resourceType')}/{r.get('id')}" for r in data.all_resources()}
    found: list[Mapping[str, Any]] = []
    for order in orders:
        contained = {c.get("id"): c for c in arr(order.raw.get("contained")) if isinstance(c, Mapping)}
        for ref in _references(order):
            if ref.startswith("#") and ref[1:] in contained:
                found.append(contained[ref[1:]])
            elif ref.startswith("QuestionnaireResponse/") and ref not in known:
                fetched = supporting.read(ref, data)
                if fetched is not None:
                    found.append(fetched)
    if found:
        data.resources["supportingInfo"] = found


def _references(order: Order) -> list[str]:
    """The references of an order's ``supportingInfo``, in order."""
    refs = (
        info.get("reference") if isinstance(info, Mapping) else None for info in arr(order.raw.get("supportingInfo"))
    )
    return [ref for ref in refs if isinstance(ref, str)]


class _SupportingReads:
    """Reads of the QuestionnaireResponses orders reference by ``supportingInfo``, started early.

    A reference the QuestionnaireResponse search did not bring is read as soon as that search is
    in, while the other searches run. Whether the answer (or the failure) counts is decided at the
    end from the whole record, as before: only when no key holds that QuestionnaireResponse.
    """

    def __init__(self, call: Call, orders: Sequence[Order], pool: ThreadPoolExecutor) -> None:
        self.call = call
        self.pool = pool
        self.refs = [ref for order in orders for ref in _references(order) if ref.startswith("QuestionnaireResponse/")]
        self.reads: dict[str, Future[Mapping[str, Any] | None]] = {}

    def start(self, key: str, resources: list[Mapping[str, Any]]) -> None:
        client = self.call.client
        if key != "questionnaireResponses" or client is None:
            return
        have = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources}
        for ref in self.refs:
            if ref not in have and ref not in self.reads:
                self.reads[ref] = self.pool.submit(client.read, ref)

    def read(self, ref: str, data: PatientData) -> Mapping[str, Any] | None:
        client = self.call.client
        if client is None:
            data.unavailable["supportingInfo"] = f"not prefetched and no fhirServer to read {ref} from"
            return None
        early = self.reads.get(ref)
        try:
            return early.result(timeout=wait_budget(client)) if early is not None else client.read(ref)
        except FhirError as exc:
            data.unavailable["supportingInfo"] = str(exc)
        except FutureTimeout:
            data.unavailable["supportingInfo"] = "the time budget of the hook call is spent"
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
