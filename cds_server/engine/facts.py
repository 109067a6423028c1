"""Derived patient facts (clinical-coding.md §2), computed once per order.

Each fact reads the record through value sets and settings named in the
CarePath's ``facts`` block; nothing here knows which guideline it serves.
Facts return evidence references with every value so that criteria can
explain themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from cds_server.engine.context import EvalContext
from cds_server.engine.logic import Tri, all_of, any_of
from fhir_mappings.codes import Code, arr, concept_codes, obj
from fhir_mappings.dates import parse_date
from fhir_mappings.record import Entry, counts_as_evidence, suspected

# Child items of a repeating history group in a documentation questionnaire:
# ``<group>.date``, ``<group>.type``, ``<group>.region``, ``<group>.relief-pct``
# and ``<group>.relief-weeks``. One convention, so every CarePath can ask for
# prior procedures the same way.
HISTORY_CHILDREN = ("date", "type", "region", "relief-pct", "relief-weeks")


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
    for entry in ctx.record.entries_matching(tuple(types), matcher, use_values):
        if entry.suspected or entry.absent or not counts_in_window(entry, ctx.as_of, lookback_days):
            continue
        codes = entry.codes | entry.value_codes if use_values else entry.codes
        hit = matcher.first_match(codes)
        if hit:
            found.append((entry, hit))
    return found


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
    for item in ctx.record.unread_of(*types):
        if item.day is not None and not within(min(item.day, ctx.as_of), ctx.as_of, lookback_days):
            continue
        if not item.codes or matcher.first_match(item.codes):
            found.append(item.describe())
    for entry in ctx.record.entries_matching(types, matcher, use_values, narrower=True):
        codes = entry.codes | entry.value_codes if use_values else entry.codes
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
            codes |= ctx.record.read_concept(raw.get("code"))[0]
    return frozenset(codes)


def order_reason_doubts(ctx: EvalContext) -> list[tuple[str, frozenset[Code]]]:
    """The order's reasons that are only suspected (provisional, differential, unconfirmed), with their codes."""
    found = []
    for ref in ctx.order.reason_refs:
        raw = ctx.record.resolve(ref) if not ref.startswith("#") else None
        if raw is not None and counts_as_evidence(raw) and suspected(raw):
            found.append((ref, ctx.record.read_concept(raw.get("code"))[0]))
    return found


def _abated(condition: Mapping[str, Any], as_of: date) -> bool:
    end = parse_date(condition.get("abatementDateTime"))
    return end is not None and end < as_of


# --- symptom onset -----------------------------------------------------------------


@dataclass(frozen=True)
class Onset:
    """When the current episode of symptoms began, and what says so."""

    day: date
    evidence: tuple[str, ...]
    earliest: date | None = None  # the earliest day a reduced-precision onset may mean


def symptom_onset(ctx: EvalContext) -> Onset | None:
    """Return when the episode this order is for began.

    The order's own reason decides which episode: the active index diagnoses with the order's
    reason codes, and the Conditions its ``reasonReference`` names. Only when none of those is
    dated does the earliest active index diagnosis stand in. Without this, an old problem-list
    entry (disc degeneration from years ago) would make a two-week-old radiculopathy look chronic.
    """
    return ctx.fact("symptom-onset", lambda: _symptom_onset(ctx))


def _symptom_onset(ctx: EvalContext) -> Onset | None:
    """The onset of the order's own reason; only an order with no reason falls back on the record.

    Borrowing an unrelated old diagnosis would make a two-week radiculopathy look chronic (or
    the reverse): when the order's reason has no dated Condition, the onset is unknown and the
    questionnaire asks.
    """
    cfg = ctx.carepath.facts["symptomOnset"]
    index = [e for e, _ in matching_entries(ctx, cfg["indexValueSets"], ("Condition",), None, use_values=False)]
    referenced = []
    for ref in ctx.order.reason_refs:
        entry = next((e for e in ctx.record.entries("Condition") if e.ref == ref or ref.endswith("/" + e.ref)), None)
        if entry is not None and entry.start is not None and (entry.start_lo or entry.start) <= ctx.as_of:
            referenced.append(entry)
    reasons = ctx.order.reason_codes
    own = [e for e in index if reasons and e.codes & reasons] + referenced
    has_reason = bool(reasons or ctx.order.reason_refs)
    dated = [e for e in (own if has_reason else index) if e.start is not None]
    if not dated:
        return None
    day = min(entry_day(e, ctx.as_of) or ctx.as_of for e in dated)
    earliest = min(e.start_lo or e.start for e in dated if e.start is not None)
    refs = tuple(sorted({e.ref for e in dated if entry_day(e, ctx.as_of) == day}))
    return Onset(day, refs, earliest)


# --- pain scores -------------------------------------------------------------------


@dataclass(frozen=True)
class PainScore:
    """One pain score on a 0-10 scale."""

    day: date
    value: float
    ref: str


def pain_scores(ctx: EvalContext) -> list[PainScore]:
    """Return the patient's pain scores, oldest first (values outside the scale dropped)."""
    return ctx.fact("pain-scores", lambda: _pain_scores(ctx))


def _pain_scores(ctx: EvalContext) -> list[PainScore]:
    cfg = ctx.carepath.facts["painScores"]
    low, high = float(cfg["min"]), float(cfg["max"])
    out = []
    for entry, _ in matching_entries(ctx, cfg["valueSets"], ("Observation",), None, use_values=False):
        if entry.start and entry.quantity and low <= entry.quantity.value <= high:
            out.append(PainScore(entry.start, entry.quantity.value, entry.ref))
    return sorted(out, key=lambda s: (s.day, s.ref))


def pain_reduction(ctx: EvalContext, since: date) -> tuple[float, list[str]] | None:
    """Return the percent reduction from the first score on or after ``since`` to the latest."""
    baseline_days = int(ctx.carepath.facts["painRelief"]["baselineDays"])
    scores = [s for s in pain_scores(ctx) if s.day >= since - timedelta(days=baseline_days)]
    if len(scores) < 2 or scores[-1].day <= scores[0].day or scores[0].value <= 0:
        return None
    first, last = scores[0], scores[-1]
    return (first.value - last.value) / first.value * 100.0, [first.ref, last.ref]


# --- regions ---------------------------------------------------------------------


def region_of_codes(ctx: EvalContext, codes: Iterable[Code]) -> str | None:
    """Return the spinal region the codes name, by the CarePath's region value sets."""
    code_set = frozenset(codes)
    for name, value_sets in ctx.carepath.facts["regions"]["regions"].items():
        if ctx.matcher(tuple(value_sets)).first_match(code_set):
            return str(name)
    return None


def entry_region(ctx: EvalContext, entry: Entry) -> str | None:
    """Return the region of a history entry: body site, then its reason codes or Conditions."""
    region = region_of_codes(ctx, entry.body_site) or region_of_codes(ctx, entry.reason_codes)
    if region:
        return region
    for ref in entry.reason_refs:
        raw = ctx.record.resolve(ref)
        if raw:
            region = region_of_codes(ctx, concept_codes(raw.get("code")))
            if region:
                return region
    return None


@dataclass(frozen=True)
class OrderRegion:
    """The region of the requested service and how it was decided."""

    region: str
    source: str


def order_region(ctx: EvalContext) -> OrderRegion:
    """Return the order's region: body site, reasons, the ``svc.region``-style answer, else the default."""
    return ctx.fact("order-region", lambda: _order_region(ctx))


def _order_region(ctx: EvalContext) -> OrderRegion:
    cfg = ctx.carepath.facts["regions"]
    order = ctx.order
    region = region_of_codes(ctx, order.body_site)
    if region:
        return OrderRegion(region, f"{order.ref} bodySite")
    region = region_of_codes(ctx, order.reason_codes)
    if region:
        return OrderRegion(region, f"{order.ref} reasonCode")
    for ref in order.reason_refs:
        raw = ctx.record.resolve(ref)
        region = region_of_codes(ctx, concept_codes(obj(raw).get("code")))
        if region:
            return OrderRegion(region, ref)
    answer = ctx.answers.first(cfg["answer"]) if cfg.get("answer") else None
    answered = canonical_region(ctx, answer.value) if answer and isinstance(answer.value, str) else None
    if answer and answered in cfg["regions"]:
        return OrderRegion(str(answered), answer.source)
    return OrderRegion(str(cfg["default"]), "default region of the CarePath")


def canonical_region(ctx: EvalContext, region: str | None) -> str | None:
    """Map an answered region name onto one of the CarePath's regions through its declared aliases."""
    if region is None:
        return None
    return str(ctx.carepath.facts["regions"].get("aliases", {}).get(region, region))


def same_region(ctx: EvalContext, region: str | None) -> bool:
    """Return True when a history region counts as the order's region."""
    if region is None:
        return bool(ctx.carepath.facts["regions"]["unknownCountsAsSame"])
    return canonical_region(ctx, region) == order_region(ctx).region


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
    key = ("sessions", value_sets, lookback_days, same_region_only, _freeze(answer_group))
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


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


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


# --- conservative care ------------------------------------------------------------


@dataclass
class Component:
    """One component of conservative care (e.g. therapy, exercise, medication)."""

    name: str
    status: Tri
    start: date | None = None
    last: date | None = None
    first_seen: date | None = None  # earliest record of it in the look-back, stale ones included
    evidence: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class ConservativeCare:
    """The conservative-care episode as far as record and answers show it."""

    components: dict[str, Component]
    start: date | None
    evidence: list[str]
    end: date | None = None  # the last day the combination is known to have run (None: still running)

    def weeks(self, on: date) -> float | None:
        """Weeks of care the record shows by ``on``: from the start to the end of the combination (or ``on``)."""
        if self.start is None:
            return None
        last = min(self.end, on) if self.end is not None else on
        return max(0.0, (last - self.start).days / 7.0)


def conservative_care(ctx: EvalContext) -> ConservativeCare:
    """Return the conservative-care episode before the evaluation date."""
    return ctx.fact("conservative-care", lambda: _conservative_care(ctx, ctx.as_of))


def conservative_care_at(ctx: EvalContext, day: date) -> ConservativeCare:
    """Return the conservative-care episode as it stood on ``day`` (record only)."""
    return ctx.fact(("conservative-care-at", day), lambda: _conservative_care(ctx, day, use_answers=False))


def _conservative_care(ctx: EvalContext, as_of: date, use_answers: bool = True) -> ConservativeCare:
    cfg = ctx.carepath.facts["conservativeCare"]
    components: dict[str, Component] = {}
    for name, spec in cfg["components"].items():
        components[name] = _component(ctx, name, spec, cfg, as_of, use_answers)
    expr = cfg.get("combination")
    start, end = _combination_span(expr, components) if expr else (None, None)
    if start is None:
        # No combination held: the care there was (whose lack of a part another criterion names)
        # is measured from its first component.
        anchors = [c.start for c in components.values() if c.status is Tri.MET and c.start]
        start, end = (min(anchors) if anchors else None), None
    began = _episode_began(ctx) if start is not None else None
    if start is not None and began is not None and began > start:
        start = began  # care before any current index diagnosis began was care for something else
    continuity = int(cfg.get("continuityDays", 0))
    if end is not None and (continuity == 0 or end + timedelta(days=continuity) >= as_of):
        end = None  # still running: the last visit or fill is recent enough
    evidence = sorted({ref for c in components.values() for ref in c.evidence})
    return ConservativeCare(components, start, evidence, end)


def _episode_began(ctx: EvalContext) -> date | None:
    """When the earliest active index diagnosis began (its latest possible day): the episode cannot be older.

    Not the order's own reason alone: a reason such as spondylosis is often dated by the imaging that
    named it, long after the symptoms being treated began.
    """
    cfg = ctx.carepath.facts["symptomOnset"]
    index = [e for e, _ in matching_entries(ctx, cfg["indexValueSets"], ("Condition",), None, use_values=False)]
    dated = [entry_day(e, ctx.as_of) for e in index if e.start is not None]
    days = [d for d in dated if d is not None and d != date.max]
    return min(days) if days and len(days) == len(index) else None


def _combination_span(expr: Any, components: Mapping[str, Component]) -> tuple[date | None, date | None]:
    """(first day, last day) on which a combination expression held, by its components' dates.

    ``all`` begins when its last part began; ``any`` holds while one of its parts is current and
    began with the earliest of them seen in the look-back (therapy, then a home programme, is one
    episode of care). The episode runs until the last dated care of any part (therapy sessions go
    on while a single prescription was filled once), so one evaluation and one prescription span a
    day, not weeks.
    """
    start, last, held = _span(expr, components)
    return (start, last) if held else (None, None)


def _span(expr: Any, components: Mapping[str, Component]) -> tuple[date | None, date | None, bool]:
    if isinstance(expr, str):
        comp = components[expr]
        seen = [d for d in (comp.start, comp.first_seen) if d is not None]
        return (min(seen) if seen else None), comp.last, comp.status is Tri.MET
    parts = [_span(e, components) for e in expr.get("all") or expr.get("any")]
    lasts = [p[1] for p in parts if p[1] is not None]
    last = max(lasts) if lasts else None
    if "all" in expr:
        held = all(p[2] for p in parts)
        starts = [p[0] for p in parts]
        return (max(s for s in starts if s) if held and all(starts) else None), last, held
    held = any(p[2] for p in parts)
    starts = [p[0] for p in parts if p[0] is not None]
    return (min(starts) if held and starts else None), last, held


def _component(
    ctx: EvalContext, name: str, spec: Mapping[str, Any], cfg: Mapping[str, Any], as_of: date, use_answers: bool
) -> Component:
    lookback = int(cfg["lookbackDays"])
    min_days = int(cfg["minimumExposureDays"])
    stale = int(cfg["staleAfterDays"])
    comp = Component(name, Tri.UNKNOWN)
    classes: set[str] = set()
    routes = spec.get("routes") or {}
    for class_name, value_sets in spec["classes"].items():
        matcher = ctx.matcher(tuple(value_sets))
        route_matcher = ctx.matcher(tuple(routes[class_name])) if class_name in routes else None
        for entry in ctx.record.entries_matching(tuple(spec["resourceTypes"]), matcher, use_values=False):
            if route_matcher and entry.route_codes and not route_matcher.first_match(entry.route_codes):
                continue  # e.g. an intramuscular steroid is not an oral one
            day = entry.start
            if day is None or day > as_of - timedelta(days=min_days) or day < as_of - timedelta(days=lookback):
                continue
            # An exposure still running (active, no end) lasts until the evaluation date.
            last = entry.end or (as_of if entry.active_now else day)
            relevant = matcher.first_match(entry.codes) and not _for_another_region(ctx, entry)
            if relevant:
                comp.first_seen = min(comp.first_seen or day, day)
            if (as_of - min(last, as_of)).days > stale:
                continue
            if relevant:
                classes.add(class_name)
                comp.evidence.append(entry.ref)
                comp.start = min(comp.start or day, day)
                comp.last = max(comp.last or last, last)
    if classes:
        comp.status = Tri.MET
        comp.detail = ", ".join(sorted(classes))
    if use_answers:
        _component_answers(ctx, comp, spec.get("answers") or {}, as_of)
    return comp


def _for_another_region(ctx: EvalContext, entry: Entry) -> bool:
    """Care given for another body region (therapy for a knee, an NSAID for gout) is not this episode's care.

    Known only when the entry names its site or reason in codes the reader understands and none of them
    is in the CarePath's cohort or regions; an entry that names nothing counts.
    """
    sites = set(entry.body_site | entry.reason_codes)
    for ref in entry.reason_refs:
        raw = ctx.record.resolve(ref)
        if raw is not None:
            sites |= ctx.record.read_concept(raw.get("code"))[0]
    if not sites or region_of_codes(ctx, sites) or ctx.carepath.cohort.first_match(sites):
        return False
    return any(ctx.record.terminology.is_known(code) for code in sites)


def _component_answers(ctx: EvalContext, comp: Component, links: Mapping[str, str], as_of: date) -> None:
    """Let documentation answers add a component the record does not show (or deny it)."""
    done = ctx.answers.first(links["done"]) if "done" in links else None
    classes = ctx.answers.get(links["classes"]) if "classes" in links else []
    start = ctx.answers.first(links["start"]) if "start" in links else None
    answered_yes = (done is not None and done.value is True) or any(
        isinstance(a.value, str) and a.value != "none" for a in classes
    )
    if comp.status is not Tri.MET and answered_yes:
        comp.status = Tri.MET
        comp.evidence.extend(a.source for a in ([done] if done else []) + classes)
        comp.detail = comp.detail or ", ".join(str(a.value) for a in classes) or "documented"
    elif comp.status is not Tri.MET and done is not None and done.value is False:
        comp.status = Tri.NOT_MET
        comp.evidence.append(done.source)
    elif comp.status is not Tri.MET and classes and all(a.value == "none" for a in classes):
        comp.status = Tri.NOT_MET
        comp.evidence.extend(a.source for a in classes)
        comp.detail = "none documented"
    answered_start = start.value if start is not None and isinstance(start.value, date) else None
    if (
        comp.status is Tri.MET
        and answered_start
        and answered_start <= as_of
        and (comp.start is None or answered_start < comp.start)
    ):
        comp.start = answered_start
        comp.evidence.append(start.source if start else "")


def combination(expr: Any, components: Mapping[str, Component]) -> Tri:
    """Evaluate a combination expression (names, {"all": [...]}, {"any": [...]}) over components."""
    if isinstance(expr, str):
        return components[expr].status
    if "all" in expr:
        return all_of(combination(e, components) for e in expr["all"])
    return any_of(combination(e, components) for e in expr["any"])
