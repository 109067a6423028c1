"""Operators about how long symptoms and conservative care have lasted, and whether care failed.

``symptom_duration``, ``conservative_care`` (weeks, combination, failure) and
``conservative_care_before_first_session``, over the facts of
:mod:`cds_server.engine.facts` (onset, care episode, pain scores) and the
documentation answers; the record's span of care is a lower bound, so too short
a span asks rather than refuses (product-decisions.md §1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_server.engine import facts
from cds_server.engine.context import EvalContext
from cds_server.engine.logic import Tri, compare
from cds_server.engine.operator_base import (
    CMP,
    DAYS,
    FALSE,
    NONE,
    SUGGESTIVE,
    TRUE,
    VS_LIST,
    Finding,
    days_arg,
    operator,
)

# --- durations and conservative care ------------------------------------------------


@operator(
    "symptom_duration", {"comparator": CMP, "weeks": {"type": "number"}}, ("comparator", "weeks"), ("symptomOnset",)
)
def symptom_duration(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """Weeks since the onset of the index condition compare with a threshold."""
    onset = facts.symptom_onset(ctx)
    if onset is None:
        return Finding(NONE, "", [], "onset or recorded date of the index diagnosis")
    # A reduced-precision onset is read at the bound least favourable to approval (§5): the latest
    # day for "at least N weeks", the earliest for "fewer than N weeks".
    day = onset.earliest if args["comparator"] in ("<", "<=") and onset.earliest else onset.day
    weeks = (ctx.as_of - day).days / 7.0
    ok = compare(weeks, args["comparator"], float(args["weeks"]))
    text = f"symptoms began {day.isoformat()} ({weeks:.1f} weeks before {ctx.as_of.isoformat()})"
    return Finding(TRUE if ok else FALSE, text, list(onset.evidence))


@operator(
    "conservative_care",
    {
        "measure": {"enum": ["weeks", "combination", "failed"]},
        "comparator": CMP,
        "weeks": {"type": "number"},
        "combination": {"type": ["string", "object"]},
        "minimumReductionPercent": {"type": "number", "minimum": 0, "maximum": 100},
    },
    ("measure",),
    ("conservativeCare", "painScores", "painRelief"),
)
def conservative_care(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """Duration, combination or failure of conservative care, from the record and answers."""
    care = facts.conservative_care(ctx)
    measure = args["measure"]
    if measure == "weeks":
        return _care_weeks(ctx, care, args)
    if measure == "combination":
        return _care_combination(care, args)
    return _care_failed(ctx, care, args)


def _care_weeks(ctx: EvalContext, care: facts.ConservativeCare, args: Mapping[str, Any]) -> Finding:
    """Duration of conservative care: the record's span is a lower bound, so too short a span is unknown.

    Care given elsewhere may be missing from this EHR, so a record showing
    only three weeks does not prove "not more than six" (product-decisions.md
    §1): the questionnaire asks, and a documented duration decides.
    """
    op, threshold = args["comparator"], float(args["weeks"])
    answered = _number(ctx.answers.first(ctx.carepath.facts["conservativeCare"]["answers"]["weeks"]))
    recorded = care.weeks(ctx.as_of)
    if recorded is not None and compare(recorded, op, threshold):
        return Finding(TRUE, f"conservative care since {care.start} ({recorded:.1f} weeks)", care.evidence)
    if answered is not None:
        value, source = answered
        return Finding(TRUE if compare(value, op, threshold) else FALSE, _answered(ctx, source, value), [source])
    if recorded is not None:
        return Finding(
            NONE,
            f"the record shows conservative care since {care.start} ({recorded:.1f} weeks)",
            care.evidence,
            "therapy, exercise and medication records",
        )
    return Finding(NONE, "", [], "therapy, exercise and medication records in the look-back window")


def _answered(ctx: EvalContext, source: str, value: Any) -> str:
    """Say which answer decided: "answered '5' to “Total weeks ...”" (the question, not its linkId)."""
    link_id = source.split("#", 1)[-1]
    question = ctx.carepath.questions.get(link_id)
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"answered '{shown}' to “{question.text if question else link_id}”"


def _number(answer: Any) -> tuple[float, str] | None:
    """Return (value, source) of a numeric answer, or None."""
    if answer is None or isinstance(answer.value, bool) or not isinstance(answer.value, (int, float)):
        return None
    return float(answer.value), answer.source


def _care_combination(care: facts.ConservativeCare, args: Mapping[str, Any]) -> Finding:
    result = facts.combination(args["combination"], care.components)
    parts = [
        f"{c.name}: {c.status.value}" + (f" ({c.detail})" if c.detail and c.status is Tri.MET else "")
        for c in care.components.values()
    ]
    status = {Tri.MET: TRUE, Tri.NOT_MET: FALSE, Tri.UNKNOWN: NONE}[result]
    return Finding(status, "; ".join(parts), care.evidence, "therapy, exercise and medication records")


def _care_failed(ctx: EvalContext, care: facts.ConservativeCare, args: Mapping[str, Any]) -> Finding:
    finding = _care_failed_finding(ctx, care, args)
    finding.conflict = _pain_conflict(ctx)
    return finding


def _pain_conflict(ctx: EvalContext) -> str:
    """A documented current pain that differs from a pain score recorded within the current window (§7)."""
    link = ctx.carepath.facts["conservativeCare"]["answers"]["painNow"]
    now = _number(ctx.answers.first(link))
    days = int(ctx.carepath.facts["painScores"].get("currentDays", 0))
    recent = [s for s in facts.pain_scores(ctx) if 0 <= (ctx.as_of - s.day).days <= days]
    if now is None or not recent:
        return ""
    latest = recent[-1]
    if abs(latest.value - now[0]) < 1:
        return ""
    return f"{_answered(ctx, now[1], now[0])}, but {latest.ref} recorded pain {latest.value:g} on {latest.day}"


def _care_failed_finding(ctx: EvalContext, care: facts.ConservativeCare, args: Mapping[str, Any]) -> Finding:
    threshold = float(args["minimumReductionPercent"])
    links = ctx.carepath.facts["conservativeCare"]["answers"]
    record = facts.pain_reduction(ctx, care.start) if care.start else None
    if record is not None and record[0] < threshold:
        return Finding(TRUE, f"pain fell {record[0]:.0f}% (less than {threshold:g}%)", record[1])
    failed = ctx.answers.first(links["failed"])
    if failed is not None and isinstance(failed.value, bool):
        return Finding(TRUE if failed.value else FALSE, _answered(ctx, failed.source, failed.value), [failed.source])
    if record is not None:
        return Finding(FALSE, f"pain fell {record[0]:.0f}% (at least {threshold:g}%)", record[1])
    before, now = ctx.answers.first(links["painBaseline"]), ctx.answers.first(links["painNow"])
    if (
        before
        and now
        and isinstance(before.value, (int, float))
        and isinstance(now.value, (int, float))
        and before.value > 0
    ):
        drop = (float(before.value) - float(now.value)) / float(before.value) * 100.0
        return Finding(
            TRUE if drop < threshold else FALSE,
            f"documented pain {before.value:g} -> {now.value:g} ({drop:.0f}% less)",
            [before.source, now.source],
        )
    return Finding(NONE, "", [], "pain scores during the episode")


@operator(
    "conservative_care_before_first_session",
    {
        "valueSets": VS_LIST,
        "lookbackDays": DAYS,
        "comparator": CMP,
        "weeks": {"type": "number"},
        "answer": {"type": "string"},
    },
    ("valueSets", "comparator", "weeks"),
    ("conservativeCare", "regions"),
)
def conservative_care_before_first_session(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """Weeks of conservative care before the first session of a procedure compare with a threshold.

    The record's span is a lower bound; a documented longer span extends it.
    """
    op, threshold = args["comparator"], float(args["weeks"])
    answered = _number(ctx.answers.first(args["answer"])) if args.get("answer") else None
    if not ctx.record_available:
        if answered is None:
            return Finding(NONE, "the record could not be obtained", [], "conservative care before the first block")
        return Finding(
            TRUE if compare(answered[0], op, threshold) else FALSE,
            _answered(ctx, answered[1], answered[0]),
            [answered[1]],
        )
    found = facts.sessions(ctx, tuple(args["valueSets"]), days_arg(args, "lookbackDays"), True, None)
    recorded, evidence = _care_before(ctx, found[0]) if found else (None, [])
    if answered is not None and (recorded is None or answered[0] > recorded):
        value, source = answered
        return Finding(TRUE if compare(value, op, threshold) else FALSE, _answered(ctx, source, value), [source])
    total = _number(ctx.answers.first(ctx.carepath.facts["conservativeCare"]["answers"]["weeks"]))
    if found and total is not None and op in ("<", "<=") and compare(total[0], op, threshold):
        # The documented total of care bounds the care before the first block from above.
        return Finding(TRUE, f"{_answered(ctx, total[1], total[0])} in total", [total[1], *found[0].evidence])
    if found and recorded is None:
        recorded, evidence = 0.0, list(found[0].evidence)  # no care on record before the block: a span of zero
    if recorded is not None:
        return _recorded_span(recorded, found[0], evidence, op, threshold)
    return Finding(NONE, "", [], "conservative care before the first block")


def _care_before(ctx: EvalContext, first: facts.Session) -> tuple[float | None, list[str]]:
    """Weeks of conservative care the record shows before the first session, with their evidence."""
    care = facts.conservative_care_at(ctx, first.day)
    if care.start is None:
        return None, []
    return care.weeks(first.day), care.evidence + first.evidence


def _recorded_span(recorded: float, first: facts.Session, evidence: list[str], op: str, threshold: float) -> Finding:
    """The record's span of care is a lower bound (care elsewhere may be missing): it proves "at least",
    never "fewer than"; a short span asks instead of deciding."""
    text = f"{recorded:.1f} weeks of conservative care before {first.day} on record"
    ok = compare(recorded, op, threshold)
    if op in (">", ">=") and ok or op in ("<", "<=") and not ok:
        return Finding(TRUE if ok else FALSE, text, evidence)
    return Finding(SUGGESTIVE, f"only {text}; care elsewhere may be missing", evidence)
