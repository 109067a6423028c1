"""Reading the record for a criterion: which entries prove, deny or leave in doubt a value set's finding.

The primitives every operator and fact uses: look-back windows and the day an
entry is taken to be (the bound least favourable to approval,
product-decisions.md §5), the entries that prove a finding
(:func:`matching_entries`), those recorded as absent (:func:`denials`), and why
the record may hold a finding the reader cannot prove or rule out
(:func:`doubts`: fail closed, product-decisions.md §1); and the order's own
reasons.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Any

from cds_server.engine.context import EvalContext
from fhir_mappings.codes import Code, arr, obj
from fhir_mappings.dates import parse_date
from fhir_mappings.record import Entry, counts_as_evidence, suspected


def within(entry_day: date | None, as_of: date, lookback_days: int | None) -> bool:
    """Return True when a dated entry lies in the look-back window ending at ``as_of``.

    Entries dated after the evaluation date never count. Undated entries count
    only when there is no window (their age cannot be checked).
    """
    if entry_day is None:
        return lookback_days is None
    if entry_day > as_of:
        return False
    return lookback_days is None or entry_day >= as_of - timedelta(days=lookback_days)


def entry_day(entry: Entry, as_of: date) -> date | None:
    """The day an entry is taken to be, for windows ending at ``as_of`` (product-decisions.md §5).

    A reduced-precision date ("2024-03") is taken at its latest day not after ``as_of``: the
    bound least favourable to approval for "in the window" and "how long ago" alike. An entry
    that may only have happened after ``as_of`` is in the future (``date.max``).
    """
    if entry.start is None:
        return None
    if entry.start <= as_of:
        return entry.start
    earliest = entry.start_lo or entry.start
    return as_of if earliest <= as_of else date.max


def counts_in_window(entry: Entry, as_of: date, lookback_days: int | None) -> bool:
    """Whether an entry counts as of ``as_of`` in a look-back window (product-decisions.md §1).

    A Condition, allergy or implant that is active now counts however old its onset, and
    undated; a resolved one counts only in a window it was active in. Other entries count
    when their day lies in the window.
    """
    day = entry_day(entry, as_of)
    if entry.type in _STATEFUL:
        # Active now is the record's own statement; an onset after the evaluation date is a data
        # error, not a reason to ignore it (least favourable to approval).
        if entry.active_now and (entry.end is None or entry.end >= as_of):
            return True
        if lookback_days is None:
            return False
        last = entry.end or day
        return last is not None and last != date.max and last >= as_of - timedelta(days=lookback_days)
    return day != date.max and within(day, as_of, lookback_days)


_STATEFUL = ("Condition", "AllergyIntolerance", "Device")


def still_active(entry: Entry, as_of: date) -> bool:
    """Return False for a Condition or allergy that is not active on ``as_of``."""
    if entry.type not in ("Condition", "AllergyIntolerance"):
        return True
    return entry.active_now and (entry.end is None or entry.end >= as_of)


def matching_entries(
    ctx: EvalContext,
    value_sets: Iterable[str],
    types: Iterable[str],
    lookback_days: int | None,
    use_values: bool = True,
) -> list[tuple[Entry, Code]]:
    """Return (entry, matched code) for counted entries whose codes hit the value sets.

    Only proof counts here: a suspected diagnosis and a finding recorded as absent are
    left to :func:`doubts` and :func:`denials`.
    """
    matcher = ctx.matcher(tuple(value_sets))
    if not matcher:
        return []
    found = []
    as_of = ctx.as_of
    oldest = None  # the window's first day, worked out when an entry first needs it (as counts_in_window does)
    first: dict[frozenset[Code], Code | None] = {}  # entries share code sets: each set's first member once
    for entry in ctx.record.entries_matching(tuple(types), matcher, use_values):
        if entry.suspected or entry.absent:
            continue
        start = entry.start
        if start is None or start > as_of or entry.type in _STATEFUL:
            if not counts_in_window(entry, as_of, lookback_days):
                continue
        elif lookback_days is not None:  # counts_in_window of a dated entry in the past
            oldest = oldest or as_of - timedelta(days=lookback_days)
            if start < oldest:
                continue
        codes = entry.codes | entry.value_codes if use_values and entry.value_codes else entry.codes
        hit = first.get(codes, _UNSEEN)
        if hit is _UNSEEN:
            hit = first[codes] = matcher.first_match(codes)
        if hit:
            found.append((entry, hit))
    return found


_UNSEEN: Any = object()


def denials(
    ctx: EvalContext, value_sets: Iterable[str], types: Iterable[str], lookback_days: int | None
) -> list[Entry]:
    """Observations of these codes whose value says the finding is absent or negative."""
    matcher = ctx.matcher(tuple(value_sets))
    if not matcher:
        return []
    return [
        e
        for e in ctx.record.entries_matching(tuple(types), matcher, use_values=False)
        if e.absent and matcher.first_match(e.codes) and counts_in_window(e, ctx.as_of, lookback_days)
    ]


def doubts(
    ctx: EvalContext,
    value_sets: Iterable[str],
    types: Iterable[str],
    lookback_days: int | None,
    use_values: bool = True,
) -> list[str]:
    """Why the record may hold a finding of these value sets that the reader cannot prove or rule out.

    Fail closed (product-decisions.md §1): a resource of these types that was not understood
    (and, when its codes are known, matches the value sets), a suspected diagnosis that
    matches, a matching entry with no date where a window applies, and an incomplete search
    of these types. Each reason names the resource and what was not understood.
    """
    types = tuple(types)
    matcher = ctx.matcher(tuple(value_sets))
    found = [f"record incomplete for {', '.join(types)}: {why}" for why in ctx.record.incomplete_for(*types)]
    unread, any_coded = ctx.fact(
        ("unread-in-window", types, lookback_days), lambda: _unread_in_window(ctx, types, lookback_days)
    )
    if any_coded:
        found += [text for codes, text in unread if not codes or matcher.first_match(codes)]
    else:
        found += [text for _, text in unread]
    for entry in ctx.record.entries_matching(types, matcher, use_values, narrower=True):
        codes = entry.codes | entry.value_codes if use_values and entry.value_codes else entry.codes
        if entry.absent:
            continue
        if not matcher.first_match(codes):
            broad = next((c for c in sorted(entry.codes) if matcher.narrower_members(c)), None)
            if broad and not entry.suspected and counts_in_window(entry, ctx.as_of, lookback_days):
                found.append(f"{entry.ref}: {broad[1]} is less specific than the codes this criterion lists")
            continue
        if entry.suspected and counts_in_window(entry, ctx.as_of, lookback_days):
            found.append(f"{entry.ref}: suspected, not confirmed ({_status_word(entry)})")
        elif entry.start is None and lookback_days is not None and entry.type not in _STATEFUL:
            found.append(f"{entry.ref}: undated, so its place in the {lookback_days}-day window is unknown")
    return found


def _unread_in_window(
    ctx: EvalContext, types: tuple[str, ...], lookback_days: int | None
) -> tuple[list[tuple[frozenset[Code], str]], bool]:
    """The resources of these types not understood that may lie in the window, each with its codes and
    description (in the record's order), and whether any has codes. The same for every criterion that
    reads these types over this window: worked out once per evaluation (``ctx.fact``)."""
    window = [
        (item.codes, item.describe())
        for item in ctx.record.unread_of(*types)
        if item.day is None or within(min(item.day, ctx.as_of), ctx.as_of, lookback_days)
    ]
    return window, any(codes for codes, _ in window)


def _status_word(entry: Entry) -> str:
    raw = entry.raw.get("verificationStatus")
    codes = [c.get("code") for c in arr(obj(raw).get("coding")) if isinstance(c, Mapping)]
    return f"verificationStatus {codes[0]}" if codes else "verificationStatus"


def order_reason_codes(ctx: EvalContext) -> frozenset[Code]:
    """Return the codes of the order's reasons: reasonCode and the Conditions in reasonReference."""
    return ctx.fact("order-reasons", lambda: _order_reason_codes(ctx))


def _order_reason_codes(ctx: EvalContext) -> frozenset[Code]:
    codes = set(ctx.order.reason_codes)
    for ref in ctx.order.reason_refs:
        raw = ctx.record.resolve(ref) if not ref.startswith("#") else None
        if raw is None and ref.startswith("#"):
            raw = next(
                (c for c in arr(ctx.order.raw.get("contained")) if isinstance(c, Mapping) and c.get("id") == ref[1:]),
                None,
            )
        # A referenced Condition is evidence only while it counts (not resolved, refuted or in error)
        # and is proven: a provisional one is a doubt (order_reason_doubts), not proof.
        if raw is not None and counts_as_evidence(raw) and not _abated(raw, ctx.as_of) and not suspected(raw):
            codes |= ctx.record.classes(raw.get("code"))
    return frozenset(codes)


def order_reason_doubts(ctx: EvalContext) -> list[tuple[str, frozenset[Code]]]:
    """The order's reasons that are only suspected (provisional, differential, unconfirmed), with their codes."""
    found = []
    for ref in ctx.order.reason_refs:
        raw = ctx.record.resolve(ref) if not ref.startswith("#") else None
        if raw is not None and counts_as_evidence(raw) and suspected(raw):
            found.append((ref, ctx.record.classes(raw.get("code"))))
    return found


def _abated(condition: Mapping[str, Any], as_of: date) -> bool:
    end = parse_date(condition.get("abatementDateTime"))
    return end is not None and end < as_of
