"""Facts about the episode the order is for: when symptoms began, the pain scores, and the spinal region.

Derived once per order (``EvalContext.fact``) through the value sets and
settings of the CarePath's ``facts`` block; each comes with the references of
the evidence it rests on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from cds_server.engine.context import EvalContext
from cds_server.engine.evidence import (
    entry_day,
    matching_entries,
)
from fhir_mappings.codes import Code, concept_codes, obj
from fhir_mappings.record import Entry

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
    scores = pain_scores(ctx)
    if scores:  # the window's first day once, not per score
        first_day = since - timedelta(days=baseline_days)
        scores = [s for s in scores if s.day >= first_day]
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
