"""Operators that read the draft order itself and the Patient.

The order's codes (and the other orders of the request), quantity, body site and
place of service, and the patient's age and gender. These are facts the record
states, so a documentation answer that contradicts them gives way (``stated``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_server.engine.context import EvalContext
from cds_server.engine.logic import compare
from cds_server.engine.operator_base import (
    CMP,
    FALSE,
    NONE,
    TRUE,
    VS_LIST,
    Finding,
    describe,
    operator,
)
from fhir_mappings.codes import Code
from fhir_mappings.dates import age_in_years, date_bounds
from fhir_mappings.record import describe_code

# --- the order itself -------------------------------------------------------------


@operator(
    "order_code",
    {"valueSets": VS_LIST, "includeOtherOrders": {"type": "boolean"}},
    ("valueSets",),
    reads_order_code=True,
)
def order_code(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """The order (or another order in the same request) carries a code from the value sets."""
    matcher = ctx.matcher(tuple(args["valueSets"]))
    orders = [ctx.order] + (list(ctx.other_orders) if args.get("includeOtherOrders") else [])
    for order in orders:
        hit = matcher.first_match(order.codes)
        if hit:
            return Finding(TRUE, f"{describe(hit)} ordered in {order.ref}", [order.ref])
    return Finding(FALSE, "not among the codes ordered", [o.ref for o in orders])


@operator(
    "order_code_count",
    {
        "valueSets": VS_LIST,
        "comparator": CMP,
        "count": {"type": "integer", "minimum": 0},
        "includeOtherOrders": {"type": "boolean"},
    },
    ("valueSets", "comparator", "count"),
    reads_order_code=True,
)
def order_code_count(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """How many units of codes from the value sets the request orders (quantity counts) compares with a number."""
    matcher = ctx.matcher(tuple(args["valueSets"]))
    orders = [ctx.order] + (list(ctx.other_orders) if args.get("includeOtherOrders") else [])
    units = 0.0
    refs = []
    for order in orders:
        if matcher.first_match(order.codes):
            units += order.quantity if order.quantity else 1.0
            refs.append(order.ref)
    ok = compare(units, args["comparator"], int(args["count"]))
    return Finding(TRUE if ok else FALSE, f"{units:g} unit(s) ordered", refs or [ctx.order.ref])


@operator("order_body_site", {"valueSets": VS_LIST}, ("valueSets",))
def order_body_site(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """The order's body site is one from the value sets."""
    if not ctx.order.body_site:
        return Finding(NONE, "", [], f"{ctx.order.ref} bodySite")
    hit = ctx.matcher(tuple(args["valueSets"])).first_match(ctx.order.body_site)
    if not hit and not any(ctx.record.terminology.is_known(c) for c in ctx.order.body_site):
        shown = ", ".join(describe_code(c) for c in sorted(ctx.order.body_site))
        return Finding(NONE, f"body site {shown} not understood", [ctx.order.ref], f"{ctx.order.ref} bodySite")
    if hit:
        return Finding(TRUE, f"body site {describe(hit)}", [ctx.order.ref], stated=True)
    return Finding(FALSE, "body site outside the listed regions", [ctx.order.ref], stated=True)


@operator(
    "order_quantity",
    {"measure": {"enum": ["visits", "weeks"]}, "comparator": CMP, "value": {"type": "number"}},
    ("measure", "comparator", "value"),
)
def order_quantity(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """The requested number of visits, or weeks, compares with a limit."""
    value = requested(ctx, args["measure"])
    if value is None:
        return Finding(NONE, "", [], f"quantity and timing of {ctx.order.ref}")
    ok = compare(value, args["comparator"], float(args["value"]))
    return Finding(
        TRUE if ok else FALSE,
        f"{value:g} {args['measure']} requested",
        [ctx.order.ref],
        stated=True,
        stated_value=value,
    )


def requested(ctx: EvalContext, measure: str) -> float | None:
    order, timing = ctx.order, ctx.order.timing
    if measure == "visits":
        if order.quantity is not None:
            return order.quantity
        if timing and timing.count:
            return float(timing.count)
        if timing and timing.frequency and timing.period and timing.bounds_weeks and timing.period_unit == "wk":
            return timing.frequency / timing.period * timing.bounds_weeks
        return None
    if timing and timing.bounds_weeks is not None:
        return timing.bounds_weeks
    return None


@operator(
    "site_of_service",
    {"allowedValueSets": VS_LIST, "notAllowedValueSets": VS_LIST},
    ("allowedValueSets", "notAllowedValueSets"),
)
def site_of_service(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """The planned setting (order location code, else the encounter's class) is an allowed one."""
    allowed, denied = ctx.matcher(tuple(args["allowedValueSets"])), ctx.matcher(tuple(args["notAllowedValueSets"]))
    sources: list[tuple[str, frozenset[Code]]] = [(ctx.order.ref, ctx.order.location_codes)]
    if ctx.order.encounter_ref:
        entry = ctx.record.entry_of("Encounter", ctx.record.resolve(ctx.order.encounter_ref))
        if entry is not None:
            sources.append((entry.ref, entry.value_codes))
    for ref, codes in sources:
        if denied.first_match(codes):
            hit = denied.first_match(codes) or ("", "")
            return Finding(FALSE, f"{describe(hit)} setting in {ref}", [ref], stated=True, stated_codes=codes)
        if allowed.first_match(codes):
            hit = allowed.first_match(codes) or ("", "")
            return Finding(TRUE, f"{describe(hit)} setting in {ref}", [ref], stated=True, stated_codes=codes)
    return Finding(NONE, "", [], "order location code and encounter class")


# --- the patient --------------------------------------------------------------------


@operator("patient_age", {"comparator": CMP, "years": {"type": "number"}}, ("comparator", "years"))
def patient_age(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """The patient's age in whole years compares with a threshold."""
    patient = ctx.record.patient or {}
    bounds = date_bounds(patient.get("birthDate"))
    if bounds is None:
        return Finding(NONE, "", [], "Patient.birthDate")
    # A birth year alone spans a year of ages: each reading must hold for the result to (§5, least favourable).
    ages = {age_in_years(bounds[0], ctx.as_of), age_in_years(bounds[1], ctx.as_of)}
    ok = all(compare(a, args["comparator"], float(args["years"])) for a in ages)
    age = min(ages) if ok else max(ages) if args["comparator"] in ("<", "<=") else min(ages)
    ref = f"Patient/{patient.get('id', '?')}"
    return Finding(TRUE if ok else FALSE, f"age {age} on {ctx.as_of.isoformat()}", [ref], stated=True)


@operator("patient_gender", {"genders": {"type": "array", "items": {"type": "string"}, "minItems": 1}}, ("genders",))
def patient_gender(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """The patient's administrative gender is one of the listed values."""
    patient = ctx.record.patient or {}
    gender = patient.get("gender")
    if not isinstance(gender, str) or gender == "unknown":
        return Finding(NONE, "", [], "Patient.gender")
    ref = f"Patient/{patient.get('id', '?')}"
    return Finding(TRUE if gender in args["genders"] else FALSE, f"gender {gender}", [ref])
