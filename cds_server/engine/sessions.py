"""Prior procedure sessions and the relief after them (clinical-coding.md §2).

A session is a distinct date (per spinal region) of a procedure in the record or
of answered history; relief after one is answered, or computed from the pain
scores around it, and a recorded score outranks an answer it contradicts
(product-decisions.md §7).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from cds_server.engine.context import EvalContext
from cds_server.engine.episode import (
    PainScore,
    entry_region,
    pain_scores,
    same_region,
)
from cds_server.engine.evidence import (
    doubts,
    entry_day,
    matching_entries,
    within,
)
from fhir_mappings.codes import arr

# Child items of a repeating history group in a documentation questionnaire:
# ``<group>.date``, ``<group>.type``, ``<group>.region``, ``<group>.relief-pct``
# and ``<group>.relief-weeks``. One convention, so every CarePath can ask for
# prior procedures the same way.
HISTORY_CHILDREN = ("date", "type", "region", "relief-pct", "relief-weeks")


# --- procedure sessions ----------------------------------------------------------


@dataclass
class Session:
    """One prior procedure session: a distinct date (in one region)."""

    day: date
    region: str | None
    evidence: list[str] = field(default_factory=list)
    relief_pct: float | None = None
    relief_weeks: float | None = None
    relief_evidence: list[str] = field(default_factory=list)


def sessions(
    ctx: EvalContext,
    value_sets: tuple[str, ...],
    lookback_days: int | None,
    same_region_only: bool,
    answer_group: Mapping[str, Any] | None,
) -> list[Session]:
    """Return prior sessions (distinct dates) from procedures and answered history, oldest first.

    Add-on codes describe extra levels on the same date, so counting distinct
    dates counts sessions, not CPT lines (clinical-coding.md §0.3).
    """
    key = ("sessions", value_sets, lookback_days, same_region_only, _group_key(answer_group))
    return ctx.fact(key, lambda: _sessions(ctx, value_sets, lookback_days, same_region_only, answer_group))


def history_known(ctx: EvalContext, answer_group: Mapping[str, Any] | None) -> bool:
    """Return True when prior sessions can be counted: the record was obtained, or history was documented."""
    if ctx.record_available:
        return True
    return bool(answer_group) and bool(ctx.answers.groups(answer_group["linkId"]))


def _sessions(
    ctx: EvalContext,
    value_sets: tuple[str, ...],
    lookback_days: int | None,
    same_region_only: bool,
    answer_group: Mapping[str, Any] | None,
) -> list[Session]:
    by_day: dict[date, Session] = {}
    recorded = matching_entries(ctx, value_sets, ("Procedure",), lookback_days, use_values=False)
    for entry, _ in recorded if ctx.record_available else []:
        day = entry_day(entry, ctx.as_of)
        if day is None or day == date.max:
            continue
        region = entry_region(ctx, entry)
        if same_region_only and not same_region(ctx, region):
            continue
        session = by_day.setdefault(day, Session(day, region))
        session.evidence.append(entry.ref)
    if answer_group:
        _merge_answered(ctx, by_day, answer_group, lookback_days, same_region_only)
    return [by_day[d] for d in sorted(by_day)]


def session_doubts(
    ctx: EvalContext, value_sets: tuple[str, ...], lookback_days: int | None, maybe: tuple[str, ...] = ()
) -> list[str]:
    """Why prior sessions of these codes may be miscounted: procedures not understood, undated or pending.

    A local-coded or undated injection may be one more session in the window, and so may a
    procedure coded in ``maybe`` (an unlisted procedure code that can stand for several
    services): counting it as none would loosen a frequency limit (product-decisions.md §1, §5).
    """
    if not ctx.record_available or not value_sets:
        return []
    found = doubts(ctx, value_sets, ("Procedure",), lookback_days, use_values=False)
    for entry, code in matching_entries(ctx, maybe, ("Procedure",), lookback_days, use_values=False):
        found.append(f"{entry.ref}: {code[1]} ({entry.text or 'unlisted procedure'}) may be one of these")
    matcher = ctx.matcher(value_sets)
    for entry in (
        ctx.record.entries_matching(("Procedure",), matcher, use_values=False) if lookback_days is None else ()
    ):
        if entry.start is None and matcher.first_match(entry.codes):
            found.append(f"{entry.ref}: undated")
    return found


def _merge_answered(
    ctx: EvalContext,
    by_day: dict[date, Session],
    group: Mapping[str, Any],
    lookback_days: int | None,
    same_region_only: bool,
) -> None:
    link = group["linkId"]
    types = set(arr(group.get("types")))
    for instance in ctx.answers.groups(link):
        day = instance.first(f"{link}.date")
        if not isinstance(day, date) or not within(day, ctx.as_of, lookback_days):
            continue
        kind = instance.first(f"{link}.type")
        if types and kind is not None and kind not in types:
            continue
        region = instance.first(f"{link}.region")
        region = region if isinstance(region, str) else None
        if same_region_only and not same_region(ctx, region):
            continue
        session = by_day.setdefault(day, Session(day, region))
        session.evidence.append(instance.source)
        pct, weeks = instance.first(f"{link}.relief-pct"), instance.first(f"{link}.relief-weeks")
        if isinstance(pct, (int, float)) and not isinstance(pct, bool):
            session.relief_pct = float(pct)
            session.relief_evidence = [instance.source]
        if isinstance(weeks, (int, float)) and not isinstance(weeks, bool):
            session.relief_weeks = float(weeks)


def _group_key(group: Mapping[str, Any] | None) -> tuple[str, tuple[str, ...]] | None:
    """What of an ``answerGroup`` argument the sessions depend on (its schema allows only these two)."""
    if not group:
        return None
    return group["linkId"], tuple(arr(group.get("types")))


@dataclass(frozen=True)
class Relief:
    """Pain relief after one session, from pain scores or from an answer."""

    percent: float
    weeks: float | None
    evidence: tuple[str, ...]
    conflict: str = ""  # an answered relief that the recorded scores contradict (product-decisions.md §7)


def relief_after(ctx: EvalContext, session: Session, threshold: float, kind: str = "therapeutic") -> Relief | None:
    """Return relief after ``session``: an answered relief, else one computed from pain scores.

    ``kind`` picks the window relief is read in: a therapeutic procedure's relief from weeks
    after it, a diagnostic block's in the hours after it (the block's anaesthetic lasts
    hours; a score weeks later says nothing about it). Computed relief compares the last
    score in the baseline window before the session with the best score in that window.
    An answered relief contradicted by a recorded score in the period it claims (§7) gives
    way to the record, and the contradiction is named.
    """
    start, end = _relief_window(ctx, kind)
    computed = _recorded_relief(ctx, session, threshold, start, end)
    if session.relief_pct is None:
        return computed
    answered = Relief(session.relief_pct, session.relief_weeks, tuple(session.relief_evidence))
    claimed_end = min(end, int(answered.weeks * 7)) if answered.weeks is not None else end
    contradicting = _recorded_relief(ctx, session, threshold, start, max(start, claimed_end))
    if contradicting is not None and (contradicting.percent >= threshold) != (answered.percent >= threshold):
        shown = ", ".join(answered.evidence)
        conflict = (
            f"{shown} reports {answered.percent:g}% relief, but the pain scores show {contradicting.percent:.0f}%"
        )
        return replace(contradicting, conflict=conflict)
    return answered


def _relief_window(ctx: EvalContext, kind: str) -> tuple[int, int]:
    cfg = ctx.carepath.facts["painRelief"]
    if kind == "diagnostic":
        return int(cfg["diagnosticWindowStartDays"]), int(cfg["diagnosticWindowEndDays"])
    return int(cfg["windowStartDays"]), int(cfg["windowEndDays"])


def _recorded_relief(
    ctx: EvalContext, session: Session, threshold: float, start_days: int, end_days: int
) -> Relief | None:
    cfg = ctx.carepath.facts["painRelief"]
    scores = pain_scores(ctx)
    day = session.day
    before = [s for s in scores if day - timedelta(days=int(cfg["baselineDays"])) <= s.day < day]
    window = [s for s in scores if day + timedelta(days=start_days) <= s.day <= day + timedelta(days=end_days)]
    if not before or not window or before[-1].value <= 0:
        return None
    baseline = before[-1]
    best = min(window, key=lambda s: (s.value, s.day))
    percent = (baseline.value - best.value) / baseline.value * 100.0
    return Relief(percent, _relief_weeks(scores, day, baseline, best, threshold), (baseline.ref, best.ref))


def _relief_weeks(
    scores: list[PainScore], session_day: date, baseline: PainScore, best: PainScore, threshold: float
) -> float | None:
    """Weeks from the session until relief fell below ``threshold`` (clinical-coding.md F-RELIEF-DURATION).

    When no later score has fallen below it, the last score still above it
    bounds the duration from below.
    """
    last_good = best
    for score in (s for s in scores if s.day > best.day):
        if (baseline.value - score.value) / baseline.value * 100.0 < threshold:
            return (score.day - session_day).days / 7.0
        last_good = score
    return (last_good.day - session_day).days / 7.0
