"""How ``evaluate`` shows an answer: coverage information as a table, the criterion tree, the cards.

Also what reads a CRD answer back (its coverage information, its assertion ids), which the
scenario runs over HTTP use too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"


def coverage_information(resource: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The coverage information this answer added to an order (the last extension), as url → values."""
    found = [e for e in resource.get("extension", []) if e.get("url") == COVERAGE_INFORMATION]
    out: dict[str, list[Any]] = {}
    for part in found[-1]["extension"] if found else []:
        value = next((v for k, v in part.items() if k.startswith("value")), None)
        out.setdefault(part["url"], []).append(value)
    return out


def assertion_ids(payload: Mapping[str, Any]) -> list[str]:
    """The coverage-assertion-id of every order the answer annotated."""
    ids = []
    for action in payload.get("systemActions", []):
        ids += coverage_information(action.get("resource", {})).get("coverage-assertion-id", [])
    return ids


def first_value(info: Mapping[str, list[Any]], key: str, pick: Callable[[Any], Any] | None = None) -> Any:
    """The first value of ``key`` in coverage information (read further by ``pick`` when a mapping), or None."""
    values = info.get(key) or [None]
    return pick(values[0]) if pick and isinstance(values[0], Mapping) else values[0]


@dataclass(frozen=True)
class Symbols:
    """Status marks for criterion results; ASCII when the terminal cannot show the nicer ones."""

    met: str
    not_met: str
    unknown: str

    def of(self, result: str) -> str:
        return {"met": self.met, "not-met": self.not_met}.get(result, self.unknown)


def symbols_for(stream: TextIO) -> Symbols:
    """✓/✗ on a UTF-8 stream, +/- otherwise (a Windows console or LANG=C must not crash the output)."""
    try:
        "✓✗—".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return Symbols("+", "-", "?")
    return Symbols("✓", "✗", "?")


_SYSTEMS = {
    "http://www.ama-assn.org/go/cpt": "CPT",
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "HCPCS",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://snomed.info/sct": "SNOMED",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
}


def order_codes(resource: Mapping[str, Any]) -> str:
    """The order's codes as people say them ("CPT 72141"), with its text when it has one."""
    for key in ("code", "codeCodeableConcept", "medicationCodeableConcept"):
        concept = resource.get(key)
        if isinstance(concept, Mapping):
            codes = [
                f"{_SYSTEMS.get(c.get('system', ''), c.get('system', '?'))} {c.get('code')}"
                for c in concept.get("coding", [])
            ]
            text = concept.get("text")
            return " ".join(p for p in (", ".join(codes), f"({text})" if text else "") if p) or "(no code)"
    return "(no code)"


def render_response(payload: Mapping[str, Any], determinations: Mapping[str, Any], marks: Symbols) -> str:
    """The answer as text: one block per annotated order, then the cards."""
    lines: list[str] = []
    actions = payload.get("systemActions", [])
    if not actions:
        lines.append("No coverage information in the answer (no order in scope, or all already annotated).")
    for action in actions:
        lines += render_order(action.get("resource", {}), determinations, marks)
        lines.append("")
    cards = payload.get("cards", [])
    numbers = [n for a in actions for n in coverage_information(a.get("resource", {})).get("satisfied-pa-id", [])]
    lines.append(f"Cards ({len(cards)})")
    lines += [f"  [{card.get('indicator', '?')}] {_dry_run_text(card.get('summary', ''), numbers)}" for card in cards]
    return "\n".join(lines) + "\n"


DRY_RUN = "(dry run: not issued)"


def _dry_run(number: str | None) -> str | None:
    """``evaluate`` decides in a throw-away database: a number it shows was never issued to anyone."""
    return f"{number} {DRY_RUN}" if number else number


def _dry_run_text(text: str, numbers: Sequence[str]) -> str:
    """A card's text as ``evaluate`` shows it: each PA number in it said, as in the table, not issued.

    The service's card says "prior authorization PA-… issued"; in a dry run nothing was, so the
    number is followed by the table's words instead (an "issued" right after it is replaced).
    """
    for number in numbers:
        text = re.sub(rf"{re.escape(number)}(?: issued\b)?", f"{number} {DRY_RUN}", text)
    return text


def render_order(resource: Mapping[str, Any], determinations: Mapping[str, Any], marks: Symbols) -> list[str]:
    """One order: its coverage information as a two-column table, then the decision's criterion tree."""
    info = coverage_information(resource)
    aid = first_value(info, "coverage-assertion-id")
    det = determinations.get(aid or "") or {}
    rows = [
        ("Coverage", first_value(info, "coverage", lambda v: v.get("reference"))),
        ("Covered", first_value(info, "covered")),
        ("PA needed", first_value(info, "pa-needed")),
        ("Doc needed", ", ".join(info.get("doc-needed", [])) or "no"),
        ("PA number", _dry_run(first_value(info, "satisfied-pa-id"))),
        ("Expires", first_value(info, "expiry-date")),
        ("Assertion", aid),
        *[("Reason", r.get("text", "")) for r in info.get("reason", [])],
        *[("Questionnaire", q) for q in info.get("questionnaire", [])],
    ]
    if det:
        service = det.get("service") or {}
        carepath = det.get("carePath") or {}
        rows += [
            ("Decision", f"{det.get('outcome')}: {det.get('summary', '')}"),
            ("Service", f"{service.get('id')} ({service.get('title')})" if service else "none (no CarePath service)"),
            ("CarePath", f"{carepath.get('id')} {carepath.get('version')}" if carepath else None),
            ("Evaluated", det.get("evaluationDate")),
            ("Questions", ", ".join(det.get("questions") or []) or None),
            ("Failing", ", ".join(det.get("failing") or []) or None),
        ]
    ref = f"{resource.get('resourceType')}/{resource.get('id')}"
    lines = [f"{ref}: {order_codes(resource)}"]
    lines += [f"  {label:<14}{value}" for label, value in rows if value not in (None, "")]
    criteria = det.get("criteria") or []
    if criteria:
        legend = f"{marks.met} met  {marks.not_met} not met  {marks.unknown} unknown"
        lines.append(f"  Criteria      ({legend}; for a non-indication, met = present)")
        lines += criterion_lines(criteria, marks)
    return lines


def criterion_lines(roots: Sequence[Mapping[str, Any]], marks: Symbols) -> list[str]:
    """The criterion tree, indented by depth, ids in one column: mark, id, text, and why."""
    flat: list[tuple[int, Mapping[str, Any]]] = []

    def walk(node: Mapping[str, Any], depth: int) -> None:
        flat.append((depth, node))
        for child in node.get("children", []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    width = max(2 * depth + len(str(node.get("id"))) for depth, node in flat) + 2
    lines = []
    for depth, node in flat:
        head = f"{'  ' * depth}{marks.of(str(node.get('result')))} {node.get('id')}"
        reason = f" — {node['reason']}" if node.get("reason") else ""
        lines.append(f"    {head:<{width}}  {node.get('text', '')}{reason}")
    return lines
