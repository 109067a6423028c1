"""Operators about prior procedure sessions: how many, how recent, and the relief after them.

Sessions are distinct dates per spinal region, from procedures in the record and
answered history (``facts.sessions``); relief is computed from pain scores or
answered, and the record outranks an answer it contradicts (product-decisions.md §7).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_server.engine import facts
from cds_server.engine.context import EvalContext
from cds_server.engine.logic import compare
from cds_server.engine.operator_base import (
    ANSWER_GROUP,
    CMP,
    DAYS,
    FALSE,
    IF_NONE,
    NONE,
    TRUE,
    VS_LIST,
    Finding,
    days_arg,
    not_understood,
    operator,
)

# --- procedure history -------------------------------------------------------------

_SESSION_ARGS = {
    "valueSets": VS_LIST,
    "maybeValueSets": VS_LIST,
    "lookbackDays": DAYS,
    "sameRegion": {"type": "boolean"},
    "answerGroup": ANSWER_GROUP,
}


def _sessions(ctx: EvalContext, args: Mapping[str, Any]) -> list[facts.Session]:
    return facts.sessions(
        ctx,
        tuple(args["valueSets"]),
        days_arg(args, "lookbackDays"),
        bool(args.get("sameRegion", True)),
        args.get("answerGroup"),
    )


def _session_refs(found: list[facts.Session]) -> list[str]:
    return [ref for s in found for ref in s.evidence]


def _if_none(args: Mapping[str, Any], text: str) -> Finding:
    status = {"met": TRUE, "not-met": FALSE, "unknown": NONE}[args.get("ifNone", "met")]
    return Finding(status, text, [])


@operator(
    "session_count",
    {**_SESSION_ARGS, "comparator": CMP, "count": {"type": "integer", "minimum": 0}},
    ("valueSets", "comparator", "count"),
    ("regions",),
)
def session_count(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """The number of prior sessions (distinct dates, same region) compares with a count."""
    if not facts.history_known(ctx, args.get("answerGroup")):
        return Finding(NONE, "the procedure history could not be obtained", [], "procedure history")
    found = _sessions(ctx, args)
    n = len(found)
    ok = compare(n, args["comparator"], int(args["count"]))
    doubts = facts.session_doubts(
        ctx, tuple(args["valueSets"]), days_arg(args, "lookbackDays"), tuple(args.get("maybeValueSets") or ())
    )
    if doubts and not (ok and args["comparator"] in (">", ">=")):
        return Finding(NONE, not_understood(doubts), _session_refs(found), "procedure history")
    window = f" in the last {args['lookbackDays']} days" if args.get("lookbackDays") is not None else ""
    dates = ", ".join(s.day.isoformat() for s in found) or "none"
    region = facts.order_region(ctx).region if args.get("sameRegion", True) else "any"
    return Finding(
        TRUE if ok else FALSE, f"{n} prior session(s){window}, region {region}: {dates}", _session_refs(found)
    )


@operator(
    "days_since_last_session",
    {**_SESSION_ARGS, "comparator": CMP, "days": {"type": "integer", "minimum": 0}, "ifNone": IF_NONE},
    ("valueSets", "comparator", "days"),
    ("regions",),
)
def days_since_last_session(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """Days since the latest prior session compare with a threshold."""
    if not facts.history_known(ctx, args.get("answerGroup")):
        return Finding(NONE, "the procedure history could not be obtained", [], "procedure history")
    found = _sessions(ctx, args)
    doubts = facts.session_doubts(
        ctx, tuple(args["valueSets"]), days_arg(args, "lookbackDays"), tuple(args.get("maybeValueSets") or ())
    )
    if doubts:
        return Finding(NONE, not_understood(doubts), _session_refs(found), "procedure history")
    if not found:
        return _if_none(args, "no prior session")
    last = found[-1]
    days = (ctx.as_of - last.day).days
    ok = compare(days, args["comparator"], int(args["days"]))
    return Finding(TRUE if ok else FALSE, f"last session {last.day.isoformat()} ({days} days ago)", last.evidence)


@operator(
    "session_relief",
    {
        **_SESSION_ARGS,
        "lastN": {"type": "integer", "minimum": 1},
        "comparator": CMP,
        "percent": {"type": "number"},
        "minimumWeeks": {"type": "number"},
        "ifNone": IF_NONE,
        "reliefWindow": {"enum": ["therapeutic", "diagnostic"]},
    },
    ("valueSets", "comparator", "percent"),
    ("regions", "painScores", "painRelief"),
)
def session_relief(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """Each of the last N sessions gave relief beyond a percentage (and lasted long enough)."""
    if not facts.history_known(ctx, args.get("answerGroup")):
        return Finding(NONE, "the procedure history could not be obtained", [], "procedure history")
    found = _sessions(ctx, args)
    n = int(args.get("lastN", 1))
    if not found:
        return _if_none(args, "no prior session")
    if len(found) < n:
        # Missing sessions may have happened elsewhere: unknown, not "not met".
        return Finding(
            NONE,
            f"only {len(found)} of {n} sessions documented",
            _session_refs(found),
            "procedure history and documented prior sessions",
        )
    return _relief_of_each(ctx, args, found[-n:])


def _relief_of_each(ctx: EvalContext, args: Mapping[str, Any], found: list[facts.Session]) -> Finding:
    """Each of these sessions gave relief beyond the percentage (and for long enough), session by session."""
    op, pct = args["comparator"], float(args["percent"])
    min_weeks = args.get("minimumWeeks")
    unknown: list[str] = []
    refs: list[str] = []
    conflicts: list[str] = []
    for session in found:
        relief = facts.relief_after(ctx, session, pct, str(args.get("reliefWindow", "therapeutic")))
        label = session.day.isoformat()
        if relief is None:
            unknown.append(f"relief after {label} not documented")
            continue
        refs.extend(relief.evidence)
        conflicts += [relief.conflict] if relief.conflict else []
        if not compare(relief.percent, op, pct):
            text = f"{relief.percent:.0f}% relief after {label} (needs {op} {pct:g}%)"
            return Finding(FALSE, text, list(relief.evidence), conflict="; ".join(conflicts))
        if min_weeks and relief.weeks is None:
            unknown.append(f"duration of relief after {label} not documented")
        elif min_weeks and relief.weeks is not None and relief.weeks < float(min_weeks):
            text = f"relief after {label} lasted {relief.weeks:.1f} weeks (needs {float(min_weeks):g})"
            return Finding(FALSE, text, list(relief.evidence))
    if unknown:
        return Finding(NONE, "; ".join(unknown), refs, "pain scores around each session")
    return Finding(TRUE, f"relief {op} {pct:g}% after the last {len(found)} session(s)", refs)


@operator(
    "pain_trend_since_first_session",
    {**_SESSION_ARGS, "comparator": CMP, "percent": {"type": "number"}, "ifNone": IF_NONE},
    ("valueSets", "comparator", "percent"),
    ("regions", "painScores", "painRelief"),
)
def pain_trend_since_first_session(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """Pain fell by more than a percentage between the first prior session and now."""
    if not facts.history_known(ctx, args.get("answerGroup")):
        return Finding(NONE, "the procedure history could not be obtained", [], "procedure history")
    found = _sessions(ctx, args)
    if not found:
        return _if_none(args, "no prior session")
    change = facts.pain_reduction(ctx, found[0].day)
    if change is None:
        return Finding(NONE, "", _session_refs(found), "pain scores since the first session")
    ok = compare(change[0], args["comparator"], float(args["percent"]))
    return Finding(TRUE if ok else FALSE, f"pain fell {change[0]:.0f}% since {found[0].day.isoformat()}", change[1])
