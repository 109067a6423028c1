"""Stage 6, the unit of work: one call's numbers, decisions, answer and cards, kept in one transaction.

This is the one component that writes what a hook call did, once, after the answer is built:

1. the authorization numbers already issued for the call's approved assertions are looked up
   (one query); those not issued yet are drawn now, in memory; an expired one gets a renewed
   assertion and a new number;
2. the answer is built with them (``answer``), so it shows exactly the numbers that will be stored;
3. one transaction keeps the new numbers, the assertions not kept yet (CRD found-11), the
   invocation with the answer given (found-37, as the web layer describes it) and the cards issued
   (so feedback can be tied to them).

A worker killed during 3 leaves nothing: no number without the decision it was issued for. A
unique-key race (another worker issued a number for the same assertion a moment earlier, or two
numbers collided) rolls all of it back and starts again at 1, so the answer names the number
the database keeps. A database that is down raises, and the web layer answers 503.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from cds_server.pipeline import coverage_info as ci
from cds_server.pipeline.answer import answer
from cds_server.pipeline.call import Call, OrderResult, Runtime
from cds_server.records.store import new_authorization_number, now

# (status, answer) -> the invocation row the web layer keeps for this call
Invocation = Callable[[int, Mapping[str, Any]], Mapping[str, Any]]
ATTEMPTS = 5


def answer_and_keep(
    runtime: Runtime, call: Call, results: Sequence[OrderResult], base_url: str, invocation: Invocation
) -> dict[str, Any]:
    """Attach the authorization numbers, build the answer and keep everything in one transaction.

    :raises RuntimeError: the records could not be kept after ``ATTEMPTS`` races.
    """
    first_ids = [r.assertion.assertion_id for r in results]
    for _ in range(ATTEMPTS):
        for result, assertion_id in zip(results, first_ids, strict=True):
            result.assertion.assertion_id = assertion_id  # a retry starts again from the same ids
        issued = _authorize(runtime, call, results)
        for result in results:
            result.new = result.assertion.assertion_id not in ci.existing_assertion_ids(result.target.annotated)
        response = answer(runtime, call, results, base_url)
        kept = runtime.store.keep_call(
            invocation(200, response),
            [_assertion_row(call, r) for r in results],
            issued,
            _card_rows(call, response["cards"]),
        )
        if kept:
            return response
    raise RuntimeError("could not record the decisions")


def _authorize(runtime: Runtime, call: Call, results: Sequence[OrderResult]) -> list[dict[str, Any]]:
    """Attach each approved assertion's authorization number; return the rows of the numbers drawn now.

    A number already issued for the assertion is reused with the expiry recorded then; an expired
    one is replaced by a renewed assertion (a new id) and its own number.
    """
    approved = [r for r in results if r.assertion.pa_needed == "satisfied"]
    if not approved:
        return []
    ids = [r.assertion.assertion_id for r in approved]
    known = runtime.store.authorizations_of(ids)
    expired = [r for r, i in zip(approved, ids, strict=True) if i in known and known[i][1] < call.today]
    for result in expired:
        result.assertion.assertion_id = _renewed_id(runtime, call, result)
    if expired:
        known.update(runtime.store.authorizations_of([r.assertion.assertion_id for r in expired]))
    expires_on = call.today + timedelta(days=int(runtime.settings["AUTHORIZATION_VALID_DAYS"]))
    issued: list[dict[str, Any]] = []
    for result in approved:
        found = known.get(result.assertion.assertion_id)
        if found is None:  # two orders of one call with the same assertion share its number
            found = known[result.assertion.assertion_id] = _new_number(issued, result, expires_on)
        number, expires = found
        result.assertion.satisfied_pa_id = number
        result.assertion.expiry_date = expires
    return issued


def _new_number(issued: list[dict[str, Any]], result: OrderResult, expires_on: date) -> tuple[str, date]:
    number = new_authorization_number()
    issued.append(
        {"pa_id": number, "assertion_id": result.assertion.assertion_id, "issued_at": now(), "expires_on": expires_on}
    )
    return number, expires_on


def _renewed_id(runtime: Runtime, call: Call, result: OrderResult) -> str:
    """The id of the assertion that replaces one whose authorization has expired (one per day)."""
    return ci.assertion_id(
        result.target.order,
        result.assertion.coverage_ref,
        result.assertion,
        result.decision_dict,
        salt=f"renewed {call.today.isoformat()}",
        key=runtime.id_key,
    )


def _assertion_row(call: Call, result: OrderResult) -> dict[str, Any]:
    return {
        "assertion_id": result.assertion.assertion_id,
        "order_ref": result.order.ref,
        "coverage_ref": result.assertion.coverage_ref,
        "patient_id": call.context.get("patientId"),
        "carepath_id": result.decision.carepath_id if result.decision else None,
        "carepath_version": result.decision.carepath_version if result.decision else None,
        "service_id": result.decision.service_id if result.decision else None,
        "outcome": result.decision.outcome.value if result.decision else result.assertion.covered,
        "pa_id": result.assertion.satisfied_pa_id,
        "decision": {"decision": result.decision_dict, "coverageInformation": result.assertion.extension()},
        "created_at": call.now,
        "hook_instance": str(call.body.get("hookInstance", ""))[:200] or None,
        "decided_ms": call.decide_ms,
        "client_iss": _text(call.requester.get("iss"), 300),
        "client_tenant": _text(call.requester.get("tenant"), 200),
    }


def _text(value: Any, limit: int) -> str | None:
    return str(value)[:limit] if isinstance(value, str) and value else None


def _card_rows(call: Call, cards: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The cards given, so feedback can be tied to them (by uuid, with the order and suggestions)."""
    issued_at = now()
    return [
        {
            "uuid": c["uuid"],
            "service_id": call.service.id,
            "hook_instance": str(call.body.get("hookInstance"))[:200],
            "order_ref": ((c.get("extension") or {}).get("davinci-crd.associated-resource") or [None])[0],
            "topic": c["source"]["topic"]["code"],
            "suggestions": [s["uuid"] for s in c.get("suggestions") or []],
            "issued_at": issued_at,
        }
        for c in cards
    ]
