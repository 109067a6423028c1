"""Operators that read coded findings, results and medications from the record.

``coded_finding`` (a code from value sets, with suggestive and negating sets
and a look-back), ``attestation`` (only an answer decides), ``observation_value_code``
(a test with a coded or quantitative result), ``medication_exposure`` and
``lab_value``. Each fails closed: what the reader could not understand that
may hold the finding makes it unknown (``facts.doubts``), never "none recorded".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from cds_server.engine import facts
from cds_server.engine.context import EvalContext
from cds_server.engine.logic import compare
from cds_server.engine.operator_base import (
    CLINICAL_TYPES,
    CMP,
    DAYS,
    FALSE,
    NONE,
    SUGGESTIVE,
    TRUE,
    TYPES,
    VS_LIST,
    Finding,
    cite,
    days_arg,
    describe,
    not_understood,
    on,
    operator,
)
from fhir_mappings.codes import Code
from fhir_mappings.record import Entry

# --- coded findings -------------------------------------------------------------


@operator(
    "coded_finding",
    {
        "valueSets": VS_LIST,
        "suggestiveValueSets": VS_LIST,
        "negatingValueSets": VS_LIST,
        "resourceTypes": TYPES,
        "lookbackDays": DAYS,
        "includeOrderReasons": {"type": "boolean"},
        "studyValueSets": VS_LIST,
    },
)
def coded_finding(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """A code from the value sets is recorded (optionally within a look-back window).

    Proof makes it true; a newer record saying it is absent (a negating code, or an
    Observation of the finding valued absent or negative) makes it false; anything the
    reader could not understand that may hold it makes it unknown, never "none recorded".
    """
    types = tuple(args.get("resourceTypes") or CLINICAL_TYPES)
    lookback = days_arg(args, "lookbackDays")
    value_sets = tuple(args.get("valueSets") or ())
    decisive = facts.matching_entries(ctx, value_sets, types, lookback)
    decisive, elsewhere = _of_the_study_region(ctx, args, decisive)
    reason, reason_doubts = _order_reason(ctx, value_sets) if args.get("includeOrderReasons") else (None, [])
    if reason is not None:
        return reason
    checked = _checked(args, types, lookback)
    denied = facts.denials(ctx, value_sets, types, lookback)
    if decisive:
        negated = _negated(ctx, args, types, lookback, decisive, denied)
        if negated:
            return negated
        refs = [e.ref for e, _ in decisive]
        return Finding(TRUE, "; ".join(cite(e.ref, c, e.start) for e, c in decisive[:3]), refs, checked)
    doubts = reason_doubts + elsewhere + facts.doubts(ctx, value_sets, types, lookback)
    return _unproven(ctx, args, types, lookback, doubts, denied, checked)


def _order_reason(ctx: EvalContext, value_sets: tuple[str, ...]) -> tuple[Finding | None, list[str]]:
    """The order's own reason as proof of the finding, else why a suspected reason leaves it in doubt."""
    matcher = ctx.matcher(value_sets)
    hit = matcher.first_match(facts.order_reason_codes(ctx))
    if hit:
        return Finding(TRUE, f"{describe(hit)} is the order's reason", [ctx.order.ref]), []
    return None, [
        f"{ref}: the order's reason is suspected, not confirmed"
        for ref, codes in facts.order_reason_doubts(ctx)
        if matcher.first_match(codes)
    ]


def _unproven(
    ctx: EvalContext,
    args: Mapping[str, Any],
    types: tuple[str, ...],
    lookback: int | None,
    doubts: list[str],
    denied: list[Entry],
    checked: str,
) -> Finding:
    """No proof of the finding: in doubt, suggested (to confirm), recorded as absent, or silence."""
    suggestive = facts.matching_entries(ctx, args.get("suggestiveValueSets") or (), types, lookback)
    if doubts:
        return Finding(SUGGESTIVE, not_understood(doubts), [], checked)
    if suggestive:
        text = "; ".join(cite(e.ref, c, e.start) for e, c in suggestive[:3])
        return Finding(SUGGESTIVE, f"{text} needs confirmation", [e.ref for e, _ in suggestive], checked)
    if denied and args.get("valueSets"):
        latest = max(denied, key=lambda e: (e.start or date.min, e.ref))
        return Finding(
            FALSE, f"recorded as absent in {latest.ref}" + on(latest.start), [latest.ref], checked, stated=True
        )
    return Finding(NONE, "", [], checked)


_STUDIES = ("DiagnosticReport", "ImagingStudy")


def _of_the_study_region(
    ctx: EvalContext, args: Mapping[str, Any], found: list[tuple[Entry, Code]]
) -> tuple[list[tuple[Entry, Code]], list[str]]:
    """Keep imaging evidence only from studies shown to be of the criterion's region (``studyValueSets``).

    A study of another region, or one whose code and body site name no region, does not show
    the finding in the region ordered: its evidence becomes a doubt (asked), never proof.
    """
    if not args.get("studyValueSets"):
        return found, []
    study = ctx.matcher(tuple(args["studyValueSets"]))
    kept, doubts = [], []
    for entry, code in found:
        if entry.type not in _STUDIES or study.first_match(entry.codes | entry.body_site | {code}):
            kept.append((entry, code))
        else:
            doubts.append(f"{entry.ref}: the study is not shown to be of the region this criterion is about")
    return kept, doubts


def _negated(
    ctx: EvalContext,
    args: Mapping[str, Any],
    types: tuple[str, ...],
    lookback: int | None,
    positive: list[Any],
    denied: list[Entry] = (),  # type: ignore[assignment]
) -> Finding | None:
    """Return a FALSE finding when a negating record (e.g. 'not pregnant') is newer than every positive one."""
    negating = [(e, c) for e, c in facts.matching_entries(ctx, args.get("negatingValueSets") or (), types, lookback)]
    negating += [(e, next(iter(sorted(e.codes)))) for e in denied]
    if not negating:
        return None
    latest_pos = max((e.start or date.min) for e, _ in positive)
    latest_neg = max(negating, key=lambda pair: pair[0].start_lo or pair[0].start or date.min)
    if (latest_neg[0].start_lo or latest_neg[0].start or date.min) > latest_pos:
        entry, code = latest_neg
        return Finding(FALSE, f"superseded by {cite(entry.ref, code, entry.start)}", [entry.ref])
    return None


def _checked(args: Mapping[str, Any], types: tuple[str, ...], lookback: int | None) -> str:
    sets = ", ".join((args.get("valueSets") or []) + (args.get("suggestiveValueSets") or []))
    window = f" in the last {lookback} days" if lookback is not None else ""
    return f"{sets} in {', '.join(types)}{window}"


@operator(
    "attestation",
    {"suggestiveValueSets": VS_LIST, "resourceTypes": TYPES, "lookbackDays": DAYS},
)
def attestation(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """Only a documentation answer decides; related codes are shown as hints."""
    finding = coded_finding(ctx, {**args, "valueSets": []})
    if finding.status == NONE:
        finding.checked = "not coded in EHR data; asked in the documentation questionnaire"
    return finding


_THRESHOLD = {
    "type": "object",
    "additionalProperties": False,
    "required": ["value", "units"],
    "properties": {"value": {"type": "number"}, "units": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
}


@operator(
    "observation_value_code",
    {
        "codeValueSets": VS_LIST,
        "valueValueSets": VS_LIST,
        "negatingValueSets": VS_LIST,
        "lookbackDays": DAYS,
        "positiveFrom": _THRESHOLD,
    },
    ("codeValueSets", "valueValueSets"),
)
def observation_value_code(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """An Observation with a code from one value set has a coded value from another (e.g. positive hCG).

    A newer record from ``negatingValueSets`` (e.g. "not pregnant"), or a newer result of the
    same test that is negative, supersedes it.
    """
    lookback = days_arg(args, "lookbackDays")
    value_matcher = ctx.matcher(tuple(args["valueValueSets"]))
    results = facts.matching_entries(ctx, args["codeValueSets"], ("Observation",), lookback, False)
    found = [(entry, code) for entry, code in results if value_matcher.first_match(entry.value_codes)]
    quantitative = _quantitative(ctx, args.get("positiveFrom"), results)
    found += quantitative.positive
    checked = f"{', '.join(args['codeValueSets'])} results"
    if not found:
        doubts = quantitative.doubts + facts.doubts(ctx, args["codeValueSets"], ("Observation",), lookback, False)
        if doubts:
            return Finding(SUGGESTIVE, not_understood(doubts), [], checked)
        return Finding(NONE, "", [], checked)
    denied = facts.denials(ctx, args["codeValueSets"], ("Observation",), lookback) + quantitative.negative
    negated = _negated(ctx, args, ("Condition", "Observation"), lookback, found, denied)
    if negated:
        return negated
    entry, code = max(found, key=lambda pair: pair[0].start or date.min)
    hit = value_matcher.first_match(entry.value_codes)
    quantity = f"{entry.quantity.value:g} {entry.quantity.unit}" if entry.quantity else "positive"
    shown = describe(hit) if hit else quantity  # the code with its system, so a card can show its display
    return Finding(TRUE, f"{cite(entry.ref, code, entry.start)} = {shown}", [e.ref for e, _ in found])


@dataclass
class _Quantitative:
    positive: list[tuple[Entry, Code]] = field(default_factory=list)
    negative: list[Entry] = field(default_factory=list)
    doubts: list[str] = field(default_factory=list)


def _quantitative(ctx: EvalContext, threshold: Mapping[str, Any] | None, results: list[Any]) -> _Quantitative:
    """Numeric results of a test that also has a coded form (a quantitative β-hCG): positive from a threshold."""
    out = _Quantitative()
    if not threshold:
        return out
    for entry, code in results:
        if entry.quantity is None or entry.value_codes:
            continue
        value = _in_units(ctx, entry, list(threshold["units"]))
        if value is None:
            out.doubts.append(f"{entry.ref}: no value in {' or '.join(threshold['units'])}")
        elif value >= float(threshold["value"]):
            out.positive.append((entry, code))
        else:
            out.negative.append(entry)
    return out


@operator(
    "medication_exposure",
    {"valueSets": VS_LIST, "recentDays": {"type": "integer", "minimum": 0}, "lookbackDays": DAYS},
    ("valueSets", "recentDays"),
)
def medication_exposure(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """A medication from the value sets is in use, or its use ended within ``recentDays``.

    Requests and statements count by their dates whatever their status (active, on hold,
    stopped, completed): one that ended on a day the record does not give, and may have
    ended within ``recentDays``, is unknown, as is any medication the reader could not
    classify (product-decisions.md §1).
    """
    recent = int(args["recentDays"])
    since = ctx.as_of - timedelta(days=recent)
    lookback = days_arg(args, "lookbackDays")
    uncertain: list[str] = []
    for entry, code in facts.matching_entries(ctx, args["valueSets"], _MEDICATIONS, lookback):
        ongoing = entry.active_now and (entry.end is None or entry.end >= since)
        ended_recently = entry.end is not None and entry.end >= since
        started_recently = entry.start is not None and entry.start >= since
        if ongoing or ended_recently or started_recently:
            state = "in force" if ongoing else f"until {entry.end.isoformat()}" if entry.end else "recent"
            return Finding(TRUE, f"{cite(entry.ref, code, entry.start)} ({state})", [entry.ref])
        if entry.end is None and entry.start is not None:
            uncertain.append(f"{entry.ref}: {entry.status or 'ended'} on a day not recorded (started {entry.start})")
    checked = f"{', '.join(args['valueSets'])} in medication records (in force or within {recent} days)"
    doubts = uncertain + facts.doubts(ctx, args["valueSets"], _MEDICATIONS, lookback)
    if doubts:
        return Finding(SUGGESTIVE, not_understood(doubts), [], checked)
    return Finding(NONE, "", [], checked)


_MEDICATIONS = ("MedicationRequest", "MedicationStatement", "MedicationDispense", "MedicationAdministration")


@operator(
    "lab_value",
    {
        "valueSets": VS_LIST,
        "comparator": CMP,
        "value": {"type": "number"},
        "units": {"type": "array", "items": {"type": "string"}},
        "lookbackDays": DAYS,
        "use": {"enum": ["latest", "any"]},
    },
    ("valueSets", "comparator", "value", "lookbackDays"),
)
def lab_value(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """A lab result in the window is beyond a threshold (latest result, or any result).

    Results in another unit are converted through the terminology's unit table; a result
    whose unit cannot be converted, or that is not final, is unknown rather than absent.
    """
    units = list(args.get("units") or [])
    lookback = days_arg(args, "lookbackDays")
    results: list[tuple[Entry, float]] = []
    doubts = facts.doubts(ctx, args["valueSets"], ("Observation",), lookback, use_values=False)
    for entry, _ in facts.matching_entries(ctx, args["valueSets"], ("Observation",), lookback, False):
        value = _in_units(ctx, entry, units)
        if value is None:
            doubts.append(f"{entry.ref}: no value in {' or '.join(units) or 'a readable unit'}")
        else:
            results.append((entry, value))
    window = f"{', '.join(args['valueSets'])} results in the last {args['lookbackDays']} days"
    if not results:
        return Finding(SUGGESTIVE, not_understood(doubts), [], window) if doubts else Finding(NONE, "", [], window)
    if args.get("use", "latest") == "latest":
        results = [max(results, key=lambda pair: (pair[0].start or date.min, pair[0].ref))]
    op, threshold = args["comparator"], float(args["value"])
    unit = units[0] if units else ""
    for entry, value in results:
        if compare(value, op, threshold):
            return Finding(TRUE, f"{entry.ref}: {value:g} {unit} {op} {threshold:g}".replace("  ", " "), [entry.ref])
    if doubts:
        return Finding(SUGGESTIVE, not_understood(doubts), [e.ref for e, _ in results], window)
    entry, value = results[-1]
    return Finding(FALSE, f"{entry.ref}: {value:g} is not {op} {threshold:g}", [e.ref for e, _ in results])


def _in_units(ctx: EvalContext, entry: Entry, units: list[str]) -> float | None:
    """The entry's value in the first of ``units`` it can be expressed in (no units listed: as recorded)."""
    if entry.quantity is None:
        return None
    if not units or entry.quantity.unit in units:
        return entry.quantity.value
    return ctx.record.terminology.convert(entry.quantity.value, entry.quantity.unit, units)
