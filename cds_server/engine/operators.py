"""The engine's closed vocabulary: every way a leaf criterion can read the record.

Each operator is a plain function registered with the JSON Schema of its
arguments; the CarePath loader checks every leaf's arguments against that
schema, so a typo in a rules file fails at load with its JSON path, never at
evaluation time. Operators return a :class:`Finding` about the criterion's
statement; how silence and questionnaire answers combine with it is decided
in one place, :mod:`cds_server.engine.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from cds_server.engine import facts
from cds_server.engine.context import EvalContext
from cds_server.engine.logic import COMPARATORS, Tri, compare
from fhir_mappings.codes import Code
from fhir_mappings.dates import age_in_years, date_bounds
from fhir_mappings.record import Entry, describe_code

# What an operator found in the record about its statement.
TRUE = "true"  # decisive evidence that the statement holds
FALSE = "false"  # decisive evidence that it does not
SUGGESTIVE = "suggestive"  # evidence that needs confirmation (e.g. an MR-conditional device)
NONE = "none"  # the record says nothing


@dataclass
class Finding:
    """The record's evidence about one leaf criterion."""

    status: str
    reason: str
    evidence: list[str] = field(default_factory=list)
    checked: str = ""
    stated: bool = False  # the record states this fact itself (birth date, the order's own data, a value of absent)
    stated_value: float | None = None  # the number the record states (visits, weeks), compared with a numeric answer
    stated_codes: frozenset[Code] = frozenset()  # the codes the record states (a place of service)
    conflict: str = ""  # an answer the record contradicts, found by the operator itself (recorded pain scores)


OperatorFn = Callable[[EvalContext, Mapping[str, Any]], Finding]


@dataclass(frozen=True)
class Operator:
    """A registered operator: its function, argument schema, purpose and the fact settings it reads."""

    name: str
    fn: OperatorFn
    schema: Mapping[str, Any]
    doc: str
    facts: tuple[str, ...] = ()


REGISTRY: dict[str, Operator] = {}

_VS_LIST = {"type": "array", "items": {"type": "string", "pattern": "^VS-"}}
_CMP = {"enum": list(COMPARATORS)}
_DAYS = {"type": ["integer", "null"], "minimum": 0}
_TYPES = {"type": "array", "items": {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"}, "minItems": 1}
_IF_NONE = {"enum": ["met", "not-met", "unknown"]}
_ANSWER_GROUP = {
    "type": "object",
    "required": ["linkId"],
    "additionalProperties": False,
    "properties": {"linkId": {"type": "string"}, "types": {"type": "array", "items": {"type": "string"}}},
}
CLINICAL_TYPES = (
    "Condition",
    "Observation",
    "AllergyIntolerance",
    "Procedure",
    "Device",
    "DiagnosticReport",
    "ImagingStudy",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationDispense",
    "MedicationAdministration",
    "Encounter",
)


def operator(
    name: str, properties: Mapping[str, Any], required: tuple[str, ...] = (), facts: tuple[str, ...] = ()
) -> Callable[[OperatorFn], OperatorFn]:
    """Register an operator under ``name`` with an argument schema and the ``facts`` settings it reads."""

    def register(fn: OperatorFn) -> OperatorFn:
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": dict(properties),
            "required": list(required),
        }
        REGISTRY[name] = Operator(name, fn, schema, (fn.__doc__ or "").strip().splitlines()[0], facts)
        return fn

    return register


def _describe(code: Code) -> str:
    system = code[0].rstrip("/").split("/")[-1]
    return f"{code[1]} ({system})"


def _cite(entry_ref: str, code: Code, day: date | None) -> str:
    when = f" on {day.isoformat()}" if day else ""
    return f"{_describe(code)} in {entry_ref}{when}"


def _days(args: Mapping[str, Any], key: str) -> int | None:
    value = args.get(key)
    return int(value) if value is not None else None


# --- coded findings -------------------------------------------------------------


@operator(
    "coded_finding",
    {
        "valueSets": _VS_LIST,
        "suggestiveValueSets": _VS_LIST,
        "negatingValueSets": _VS_LIST,
        "resourceTypes": _TYPES,
        "lookbackDays": _DAYS,
        "includeOrderReasons": {"type": "boolean"},
        "studyValueSets": _VS_LIST,
    },
)
def coded_finding(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """A code from the value sets is recorded (optionally within a look-back window).

    Proof makes it true; a newer record saying it is absent (a negating code, or an
    Observation of the finding valued absent or negative) makes it false; anything the
    reader could not understand that may hold it makes it unknown, never "none recorded".
    """
    types = tuple(args.get("resourceTypes") or CLINICAL_TYPES)
    lookback = _days(args, "lookbackDays")
    value_sets = tuple(args.get("valueSets") or ())
    decisive = facts.matching_entries(ctx, value_sets, types, lookback)
    decisive, elsewhere = _of_the_study_region(ctx, args, decisive)
    reason_doubts: list[str] = []
    if args.get("includeOrderReasons"):
        hit = ctx.matcher(value_sets).first_match(facts.order_reason_codes(ctx))
        if hit:
            return Finding(TRUE, f"{_describe(hit)} is the order's reason", [ctx.order.ref])
        reason_doubts = [
            f"{ref}: the order's reason is suspected, not confirmed"
            for ref, codes in facts.order_reason_doubts(ctx)
            if ctx.matcher(value_sets).first_match(codes)
        ]
    checked = _checked(args, types, lookback)
    denied = facts.denials(ctx, value_sets, types, lookback)
    if decisive:
        negated = _negated(ctx, args, types, lookback, decisive, denied)
        if negated:
            return negated
        refs = [e.ref for e, _ in decisive]
        return Finding(TRUE, "; ".join(_cite(e.ref, c, e.start) for e, c in decisive[:3]), refs, checked)
    suggestive = facts.matching_entries(ctx, args.get("suggestiveValueSets") or (), types, lookback)
    doubts = reason_doubts + elsewhere + facts.doubts(ctx, value_sets, types, lookback)
    if doubts:
        return Finding(SUGGESTIVE, _not_understood(doubts), [], checked)
    if suggestive:
        text = "; ".join(_cite(e.ref, c, e.start) for e, c in suggestive[:3])
        return Finding(SUGGESTIVE, f"{text} needs confirmation", [e.ref for e, _ in suggestive], checked)
    if denied and value_sets:
        latest = max(denied, key=lambda e: (e.start or date.min, e.ref))
        return Finding(
            FALSE, f"recorded as absent in {latest.ref}" + _on(latest.start), [latest.ref], checked, stated=True
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


def _on(day: date | None) -> str:
    return f" on {day.isoformat()}" if day else ""


def _not_understood(doubts: list[str]) -> str:
    """The explanation of an unknown caused by what the reader could not read (at most three named)."""
    more = f" and {len(doubts) - 3} more" if len(doubts) > 3 else ""
    return "could not be ruled out: " + "; ".join(doubts[:3]) + more


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
        return Finding(FALSE, f"superseded by {_cite(entry.ref, code, entry.start)}", [entry.ref])
    return None


def _checked(args: Mapping[str, Any], types: tuple[str, ...], lookback: int | None) -> str:
    sets = ", ".join((args.get("valueSets") or []) + (args.get("suggestiveValueSets") or []))
    window = f" in the last {lookback} days" if lookback is not None else ""
    return f"{sets} in {', '.join(types)}{window}"


@operator(
    "attestation",
    {"suggestiveValueSets": _VS_LIST, "resourceTypes": _TYPES, "lookbackDays": _DAYS},
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
        "codeValueSets": _VS_LIST,
        "valueValueSets": _VS_LIST,
        "negatingValueSets": _VS_LIST,
        "lookbackDays": _DAYS,
        "positiveFrom": _THRESHOLD,
    },
    ("codeValueSets", "valueValueSets"),
)
def observation_value_code(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """An Observation with a code from one value set has a coded value from another (e.g. positive hCG).

    A newer record from ``negatingValueSets`` (e.g. "not pregnant"), or a newer result of the
    same test that is negative, supersedes it.
    """
    lookback = _days(args, "lookbackDays")
    value_matcher = ctx.matcher(tuple(args["valueValueSets"]))
    results = facts.matching_entries(ctx, args["codeValueSets"], ("Observation",), lookback, False)
    found = [(entry, code) for entry, code in results if value_matcher.first_match(entry.value_codes)]
    quantitative = _quantitative(ctx, args.get("positiveFrom"), results)
    found += quantitative.positive
    checked = f"{', '.join(args['codeValueSets'])} results"
    if not found:
        doubts = quantitative.doubts + facts.doubts(ctx, args["codeValueSets"], ("Observation",), lookback, False)
        if doubts:
            return Finding(SUGGESTIVE, _not_understood(doubts), [], checked)
        return Finding(NONE, "", [], checked)
    denied = facts.denials(ctx, args["codeValueSets"], ("Observation",), lookback) + quantitative.negative
    negated = _negated(ctx, args, ("Condition", "Observation"), lookback, found, denied)
    if negated:
        return negated
    entry, code = max(found, key=lambda pair: pair[0].start or date.min)
    hit = value_matcher.first_match(entry.value_codes)
    shown = hit[1] if hit else f"{entry.quantity.value:g} {entry.quantity.unit}" if entry.quantity else "positive"
    return Finding(TRUE, f"{_cite(entry.ref, code, entry.start)} = {shown}", [e.ref for e, _ in found])


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
    {"valueSets": _VS_LIST, "recentDays": {"type": "integer", "minimum": 0}, "lookbackDays": _DAYS},
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
    lookback = _days(args, "lookbackDays")
    uncertain: list[str] = []
    for entry, code in facts.matching_entries(ctx, args["valueSets"], _MEDICATIONS, lookback):
        ongoing = entry.active_now and (entry.end is None or entry.end >= since)
        ended_recently = entry.end is not None and entry.end >= since
        started_recently = entry.start is not None and entry.start >= since
        if ongoing or ended_recently or started_recently:
            state = "in force" if ongoing else f"until {entry.end.isoformat()}" if entry.end else "recent"
            return Finding(TRUE, f"{_cite(entry.ref, code, entry.start)} ({state})", [entry.ref])
        if entry.end is None and entry.start is not None:
            uncertain.append(f"{entry.ref}: {entry.status or 'ended'} on a day not recorded (started {entry.start})")
    checked = f"{', '.join(args['valueSets'])} in medication records (in force or within {recent} days)"
    doubts = uncertain + facts.doubts(ctx, args["valueSets"], _MEDICATIONS, lookback)
    if doubts:
        return Finding(SUGGESTIVE, _not_understood(doubts), [], checked)
    return Finding(NONE, "", [], checked)


_MEDICATIONS = ("MedicationRequest", "MedicationStatement", "MedicationDispense", "MedicationAdministration")


@operator(
    "lab_value",
    {
        "valueSets": _VS_LIST,
        "comparator": _CMP,
        "value": {"type": "number"},
        "units": {"type": "array", "items": {"type": "string"}},
        "lookbackDays": _DAYS,
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
    lookback = _days(args, "lookbackDays")
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
        return Finding(SUGGESTIVE, _not_understood(doubts), [], window) if doubts else Finding(NONE, "", [], window)
    if args.get("use", "latest") == "latest":
        results = [max(results, key=lambda pair: (pair[0].start or date.min, pair[0].ref))]
    op, threshold = args["comparator"], float(args["value"])
    unit = units[0] if units else ""
    for entry, value in results:
        if compare(value, op, threshold):
            return Finding(TRUE, f"{entry.ref}: {value:g} {unit} {op} {threshold:g}".replace("  ", " "), [entry.ref])
    if doubts:
        return Finding(SUGGESTIVE, _not_understood(doubts), [e.ref for e, _ in results], window)
    entry, value = results[-1]
    return Finding(FALSE, f"{entry.ref}: {value:g} is not {op} {threshold:g}", [e.ref for e, _ in results])


def _in_units(ctx: EvalContext, entry: Entry, units: list[str]) -> float | None:
    """The entry's value in the first of ``units`` it can be expressed in (no units listed: as recorded)."""
    if entry.quantity is None:
        return None
    if not units or entry.quantity.unit in units:
        return entry.quantity.value
    return ctx.record.terminology.convert(entry.quantity.value, entry.quantity.unit, units)


# --- durations and conservative care ------------------------------------------------


@operator(
    "symptom_duration", {"comparator": _CMP, "weeks": {"type": "number"}}, ("comparator", "weeks"), ("symptomOnset",)
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
        "comparator": _CMP,
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
        "valueSets": _VS_LIST,
        "lookbackDays": _DAYS,
        "comparator": _CMP,
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
    found = facts.sessions(ctx, tuple(args["valueSets"]), _days(args, "lookbackDays"), True, None)
    recorded: float | None = None
    evidence: list[str] = []
    if found:
        care = facts.conservative_care_at(ctx, found[0].day)
        if care.start is not None:
            recorded = care.weeks(found[0].day)
            evidence = care.evidence + found[0].evidence
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
        text = f"{recorded:.1f} weeks of conservative care before {found[0].day} on record"
        # The record's span is a lower bound (care elsewhere may be missing): it proves "at least",
        # never "fewer than"; a short span asks instead of deciding.
        ok = compare(recorded, op, threshold)
        if op in (">", ">=") and ok or op in ("<", "<=") and not ok:
            return Finding(TRUE if ok else FALSE, text, evidence)
        return Finding(SUGGESTIVE, f"only {text}; care elsewhere may be missing", evidence)
    return Finding(NONE, "", [], "conservative care before the first block")


# --- procedure history -------------------------------------------------------------

_SESSION_ARGS = {
    "valueSets": _VS_LIST,
    "maybeValueSets": _VS_LIST,
    "lookbackDays": _DAYS,
    "sameRegion": {"type": "boolean"},
    "answerGroup": _ANSWER_GROUP,
}


def _sessions(ctx: EvalContext, args: Mapping[str, Any]) -> list[facts.Session]:
    return facts.sessions(
        ctx,
        tuple(args["valueSets"]),
        _days(args, "lookbackDays"),
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
    {**_SESSION_ARGS, "comparator": _CMP, "count": {"type": "integer", "minimum": 0}},
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
        ctx, tuple(args["valueSets"]), _days(args, "lookbackDays"), tuple(args.get("maybeValueSets") or ())
    )
    if doubts and not (ok and args["comparator"] in (">", ">=")):
        return Finding(NONE, _not_understood(doubts), _session_refs(found), "procedure history")
    window = f" in the last {args['lookbackDays']} days" if args.get("lookbackDays") is not None else ""
    dates = ", ".join(s.day.isoformat() for s in found) or "none"
    region = facts.order_region(ctx).region if args.get("sameRegion", True) else "any"
    return Finding(
        TRUE if ok else FALSE, f"{n} prior session(s){window}, region {region}: {dates}", _session_refs(found)
    )


@operator(
    "days_since_last_session",
    {**_SESSION_ARGS, "comparator": _CMP, "days": {"type": "integer", "minimum": 0}, "ifNone": _IF_NONE},
    ("valueSets", "comparator", "days"),
    ("regions",),
)
def days_since_last_session(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """Days since the latest prior session compare with a threshold."""
    if not facts.history_known(ctx, args.get("answerGroup")):
        return Finding(NONE, "the procedure history could not be obtained", [], "procedure history")
    found = _sessions(ctx, args)
    doubts = facts.session_doubts(
        ctx, tuple(args["valueSets"]), _days(args, "lookbackDays"), tuple(args.get("maybeValueSets") or ())
    )
    if doubts:
        return Finding(NONE, _not_understood(doubts), _session_refs(found), "procedure history")
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
        "comparator": _CMP,
        "percent": {"type": "number"},
        "minimumWeeks": {"type": "number"},
        "ifNone": _IF_NONE,
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
    op, pct = args["comparator"], float(args["percent"])
    min_weeks = args.get("minimumWeeks")
    unknown: list[str] = []
    refs: list[str] = []
    conflicts: list[str] = []
    for session in found[-n:]:
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
        if min_weeks:
            if relief.weeks is None:
                unknown.append(f"duration of relief after {label} not documented")
            elif relief.weeks < float(min_weeks):
                return Finding(
                    FALSE,
                    f"relief after {label} lasted {relief.weeks:.1f} weeks (needs {float(min_weeks):g})",
                    list(relief.evidence),
                )
    if unknown:
        return Finding(NONE, "; ".join(unknown), refs, "pain scores around each session")
    return Finding(TRUE, f"relief {op} {pct:g}% after the last {n} session(s)", refs)


@operator(
    "pain_trend_since_first_session",
    {**_SESSION_ARGS, "comparator": _CMP, "percent": {"type": "number"}, "ifNone": _IF_NONE},
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


# --- the order itself -------------------------------------------------------------


@operator("order_code", {"valueSets": _VS_LIST, "includeOtherOrders": {"type": "boolean"}}, ("valueSets",))
def order_code(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """The order (or another order in the same request) carries a code from the value sets."""
    matcher = ctx.matcher(tuple(args["valueSets"]))
    orders = [ctx.order] + (list(ctx.other_orders) if args.get("includeOtherOrders") else [])
    for order in orders:
        hit = matcher.first_match(order.codes)
        if hit:
            return Finding(TRUE, f"{_describe(hit)} ordered in {order.ref}", [order.ref])
    return Finding(FALSE, "not among the codes ordered", [o.ref for o in orders])


@operator(
    "order_code_count",
    {
        "valueSets": _VS_LIST,
        "comparator": _CMP,
        "count": {"type": "integer", "minimum": 0},
        "includeOtherOrders": {"type": "boolean"},
    },
    ("valueSets", "comparator", "count"),
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


@operator("order_body_site", {"valueSets": _VS_LIST}, ("valueSets",))
def order_body_site(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """The order's body site is one from the value sets."""
    if not ctx.order.body_site:
        return Finding(NONE, "", [], f"{ctx.order.ref} bodySite")
    hit = ctx.matcher(tuple(args["valueSets"])).first_match(ctx.order.body_site)
    if not hit and not any(ctx.record.terminology.is_known(c) for c in ctx.order.body_site):
        shown = ", ".join(describe_code(c) for c in sorted(ctx.order.body_site))
        return Finding(NONE, f"body site {shown} not understood", [ctx.order.ref], f"{ctx.order.ref} bodySite")
    if hit:
        return Finding(TRUE, f"body site {_describe(hit)}", [ctx.order.ref], stated=True)
    return Finding(FALSE, "body site outside the listed regions", [ctx.order.ref], stated=True)


@operator(
    "order_quantity",
    {"measure": {"enum": ["visits", "weeks"]}, "comparator": _CMP, "value": {"type": "number"}},
    ("measure", "comparator", "value"),
)
def order_quantity(ctx: EvalContext, args: Mapping[str, Any]) -> Finding:
    """The requested number of visits, or weeks, compares with a limit."""
    value = _requested(ctx, args["measure"])
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


def _requested(ctx: EvalContext, measure: str) -> float | None:
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
    {"allowedValueSets": _VS_LIST, "notAllowedValueSets": _VS_LIST},
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
            return Finding(FALSE, f"{_describe(hit)} setting in {ref}", [ref], stated=True, stated_codes=codes)
        if allowed.first_match(codes):
            hit = allowed.first_match(codes) or ("", "")
            return Finding(TRUE, f"{_describe(hit)} setting in {ref}", [ref], stated=True, stated_codes=codes)
    return Finding(NONE, "", [], "order location code and encounter class")


# --- the patient --------------------------------------------------------------------


@operator("patient_age", {"comparator": _CMP, "years": {"type": "number"}}, ("comparator", "years"))
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
