"""The conservative-care episode: its components, when the combination began and ended, and the answers.

Components (therapy, home exercise, medication, ...) are read from the record
through the CarePath's classes and routes, within the look-back and not stale,
and not for another body region; documentation answers may add or deny one.
The episode starts when the combination first held, never before the earliest
index diagnosis, and runs to its last dated care.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from cds_server.engine.context import EvalContext
from cds_server.engine.episode import (
    region_of_codes,
)
from cds_server.engine.evidence import (
    entry_day,
    matching_entries,
)
from cds_server.engine.logic import Tri, all_of, any_of
from fhir_mappings.record import Entry

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
    newest = oldest = None  # the window's last and first day, each worked out when first needed
    for class_name, value_sets in spec["classes"].items():
        matcher = ctx.matcher(tuple(value_sets))
        route_matcher = ctx.matcher(tuple(routes[class_name])) if class_name in routes else None
        for entry in ctx.record.entries_matching(tuple(spec["resourceTypes"]), matcher, use_values=False):
            if route_matcher and entry.route_codes and not route_matcher.first_match(entry.route_codes):
                continue  # e.g. an intramuscular steroid is not an oral one
            day = entry.start
            if day is None or day > (newest := newest or as_of - timedelta(days=min_days)):
                continue
            if day < (oldest := oldest or as_of - timedelta(days=lookback)):
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
            sites |= ctx.record.classes(raw.get("code"))
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
