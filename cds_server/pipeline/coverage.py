"""Which Coverage a hook call is about, and whether this payer can use it (CRD hook-13, resp-44, resp-45).

| situation | answer |
|---|---|
| no Coverage, or several | 400 with an OperationOutcome (hook-13) |
| a payer this endpoint does not serve | 400 (hook-13) |
| Coverage not active on the order date | 200, ``not-covered``, reason ``no-active-coverage`` (resp-45) |
| Coverage of another patient | 200, ``not-covered``, reason ``coverage-not-found`` (resp-45) |
| no member id to match the member | 200, ``not-covered``, reason ``no-member-found`` (resp-44) |
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_server.errors import CoverageProblem, Issue
from fhir_mappings.codes import arr
from fhir_mappings.dates import period_bounds
from fhir_mappings.order_shape import surely_valid
from fhir_mappings.orders import describe_invalid


@dataclass(frozen=True)
class CoverageCheck:
    """The Coverage of the call and, when it cannot carry a determination, why."""

    resource: Mapping[str, Any]
    ref: str
    patient_id: str

    def not_covered(self, on: date) -> tuple[str, str] | None:
        """Return (reason code, text) when this Coverage cannot carry a determination for a service on ``on``."""
        return _not_covered(self.resource, self.patient_id, on)

    def usable_for_any(self, days: list[date]) -> bool:
        """Return True when the Coverage is usable on at least one of the orders' dates."""
        return any(self.not_covered(day) is None for day in days)


def _payer_identifiers(coverage: Mapping[str, Any]) -> set[str]:
    found = set()
    for payor in arr(coverage.get("payor")):
        if not isinstance(payor, Mapping):
            continue
        identifier = payor.get("identifier")
        if isinstance(identifier, Mapping) and isinstance(identifier.get("value"), str):
            found.add(identifier["value"])
        if isinstance(payor.get("reference"), str):
            found.add(payor["reference"])
    return found


def select_coverage(
    resources: Sequence[Mapping[str, Any]], patient_id: str, payer_identifiers: Sequence[str]
) -> CoverageCheck:
    """Return the single Coverage of the call, checked.

    :raises CoverageProblem: no Coverage, several, or one for a payer this endpoint does not serve.
    """
    coverages = [r for r in resources if isinstance(r, Mapping) and r.get("resourceType") == "Coverage"]
    if not coverages:
        raise CoverageProblem(
            "No active Coverage was provided or found for the patient",
            [Issue("no active Coverage for the patient", "$.prefetch.coverage")],
        )
    if len(coverages) > 1:
        raise CoverageProblem(
            "Several Coverages were provided; send only the one relevant to these orders",
            [Issue(f"{len(coverages)} Coverages found; exactly one is expected", "$.prefetch.coverage")],
        )
    coverage = coverages[0]
    _validate(coverage)
    ref = f"Coverage/{coverage.get('id')}"
    if payer_identifiers and not (_payer_identifiers(coverage) & set(payer_identifiers)):
        raise CoverageProblem(
            "This endpoint does not serve the Coverage's payer",
            [Issue("Coverage.payor is not a payer this endpoint serves", "$.prefetch.coverage")],
        )
    return CoverageCheck(coverage, ref, patient_id)


def _validate(coverage: Mapping[str, Any]) -> None:
    """The Coverage is referenced from every answer: it must be valid FHIR with a usable id.

    :raises CoverageProblem: naming the first problems (400).
    """
    from fhir.resources.R4B.coverage import Coverage

    if not isinstance(coverage.get("id"), str) or not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", coverage["id"]):
        raise CoverageProblem(
            "The Coverage has no valid id", [Issue("Coverage.id is missing or invalid", "$.prefetch.coverage")]
        )
    if surely_valid(coverage):  # a plain Coverage: the models would accept it (tests/test_order_shape.py)
        return
    try:
        Coverage.model_validate(dict(coverage))
    except Exception as exc:  # pydantic.ValidationError and fhir-core's own errors
        text = describe_invalid(exc, limit=4)  # the element and the rule: the value may be a name or an SSN
        raise CoverageProblem("The Coverage is not valid FHIR", [Issue(text, "$.prefetch.coverage")]) from exc


def _not_covered(coverage: Mapping[str, Any], patient_id: str, on: date) -> tuple[str, str] | None:
    start, end = period_bounds(coverage.get("period"))
    if coverage.get("status") != "active" or (end and end < on) or (start and start > on):
        return "no-active-coverage", f"The coverage is not active on {on.isoformat()}, the date of the order."
    beneficiary = coverage.get("beneficiary") or {}
    reference = beneficiary.get("reference") if isinstance(beneficiary, Mapping) else None
    if isinstance(reference, str) and reference.split("/")[-1] != patient_id:
        return "coverage-not-found", "The coverage belongs to another patient."
    has_member_id = bool(coverage.get("subscriberId")) or any(
        isinstance(i, Mapping) and i.get("value") for i in arr(coverage.get("identifier"))
    )
    if not has_member_id:
        return "no-member-found", "The member cannot be matched: the coverage carries no member or subscriber id."
    return None
