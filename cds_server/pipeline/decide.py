"""Stage 4, the decisions: the engine decides every order on the patient's record; each gets its coverage information.

An engine defect becomes a technical answer for the call (never a 500, never a silent approval);
authorization numbers are attached later, when the call is kept (``keep``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from cds_server.carepath_store import terminology_for
from cds_server.engine import OrderDecision, evaluate_orders
from cds_server.pipeline import coverage_info as ci
from cds_server.pipeline.call import Call, OrderResult, Runtime
from cds_server.pipeline.coverage import CoverageCheck
from cds_server.pipeline.prefetch import PatientData
from fhir_mappings.orders import Order
from fhir_mappings.record import PatientRecord
from hooks import OrderTarget

log = logging.getLogger(__name__)
INTERNAL_ERROR = "An internal error prevented the determination."


def decide(
    runtime: Runtime,
    call: Call,
    pairs: Sequence[tuple[OrderTarget, Order]],
    data: PatientData,
    coverage: CoverageCheck,
    technical: str | None,
) -> list[OrderResult]:
    """Decide every order and build its coverage information."""
    orders = [order for _, order in pairs]
    decisions: list[OrderDecision | None] = [None] * len(orders)
    if technical is None:
        try:
            began = time.perf_counter()
            record = PatientRecord(
                data.all_resources(),
                call.context.get("patientId"),
                terminology_for(runtime.carepaths),
                data.incomplete_by_type(),
            )
            decisions = list(evaluate_orders(runtime.carepaths, orders, record, call.today))
            call.decide_ms = round((time.perf_counter() - began) * 1000, 3)
        except Exception:  # an engine defect must not become a 500 or a silent approval (CRD resp-43)
            log.exception("decision failed for hook instance %s", call.body.get("hookInstance"))
            technical = INTERNAL_ERROR
    results = []
    for (target, order), decision in zip(pairs, decisions, strict=True):
        try:
            results.append(_result(runtime, call, target, order, decision, coverage, technical))
        except Exception:  # a failure building one order's coverage information is a technical answer
            log.exception("coverage information failed for %s", order.ref)
            results.append(_result(runtime, call, target, order, None, coverage, INTERNAL_ERROR))
    return results


def _result(
    runtime: Runtime,
    call: Call,
    target: OrderTarget,
    order: Order,
    decision: OrderDecision | None,
    coverage: CoverageCheck,
    technical: str | None,
) -> OrderResult:
    not_covered = coverage.not_covered(order.authored_on or call.today)
    if not_covered is not None:
        assertion = ci.not_covered_assertion(*not_covered)
    elif technical is not None or decision is None:
        assertion = ci.technical_assertion(technical or "No determination could be made.")
    else:
        assertion = ci.assertion_for(
            decision,
            questionnaire_url(runtime, decision),
            call.service.clinical_documentation,
            runtime.settings["AUTO_APPROVAL"],
            question_texts(runtime, decision),
        )
    assertion.coverage_ref = coverage.ref
    assertion.date = call.today
    assertion.billing_codes = billing_codes(order)
    as_dict = decision.to_dict() if decision else None
    assertion.assertion_id = ci.assertion_id(target.order, coverage.ref, assertion, as_dict, key=runtime.id_key)
    # numbers and ``new``: see ``keep``
    return OrderResult(target, order, decision, assertion, new=True, decision_dict=as_dict)


def question_texts(runtime: Runtime, decision: OrderDecision) -> dict[str, str]:
    """Return the question texts of the decision's CarePath, by linkId."""
    for cp in runtime.carepaths:
        if cp.id == decision.carepath_id:
            return {q.link_id: q.text for q in cp.questions.values()}
    return {}


def questionnaire_url(runtime: Runtime, decision: OrderDecision) -> str | None:
    """Return the canonical URL (with version) of the service's documentation questionnaire."""
    for cp in runtime.carepaths:
        if cp.id == decision.carepath_id and decision.service_id:
            return f"{cp.questionnaire_base.rstrip('/')}/{cp.id}-{decision.service_id}|{cp.version}"
    return None


def billing_codes(order: Order) -> list[dict[str, str]]:
    """Return the order's CPT/HCPCS codings, as the claim will use them."""
    from fhir_mappings.systems import CPT, HCPCS

    return [{"system": s, "code": c} for s, c in sorted(order.codes) if s in (CPT, HCPCS)]
