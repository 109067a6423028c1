"""What a decision card says: the summary line and the detail a clinician reads in five seconds.

The order of the detail follows what the clinician must act on (issue 10 §1):
first what fails or is missing, each with the fact the record shows; then the
questions still to answer; then one line of what was met, with the
non-indications the record was checked for read as good news. The criterion
tree with its ids, citations and evidence stays on the decision page that every
card links to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cds_server.engine import CarePath, CriterionResult, OrderDecision, Outcome, Tri
from cds_server.pipeline.card_text import PlainWords
from cds_server.pipeline.dtr_response import open_questions

SUMMARY_LIMIT = 139  # CDS Hooks: a summary is "under 140 characters"
_LINES = 5  # failing or unknown criteria listed on a card; the decision page has them all
_MET_ITEMS = 4  # the met line names this many criteria, then "and N more"


def fit(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """Shorten ``text`` to ``limit`` characters at a word boundary, never mid-word."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:—-") + "…"


def md(text: str) -> str:
    """Make text safe inside markdown: no raw HTML, no accidental emphasis, tables or links."""
    text = text.replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", text)


def clause(text: str) -> str:
    """A criterion's text as a clause of a summary: first letter lowered, a trailing parenthesis dropped."""
    return sentence_case(re.sub(r"\s*\([^()]*\)$", "", text))


def sentence_case(text: str) -> str:
    """Lower the first letter to run a criterion on in a sentence, but never an acronym ("CT myelogram")."""
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        return text[0].lower() + text[1:]
    return text


@dataclass
class Explanation:
    """A decision sorted by what the clinician must do about each part."""

    failing: list[CriterionResult] = field(default_factory=list)  # not met, or a non-indication present
    unknown: list[CriterionResult] = field(default_factory=list)  # what the questions settle
    met: list[str] = field(default_factory=list)  # criteria met, by their guideline text
    absent: list[str] = field(default_factory=list)  # non-indications checked and not recorded


def explain(decision: OrderDecision) -> Explanation:
    """Sort the decision's criteria: failing and unknown leaves, met criteria, absent non-indications."""
    out = Explanation()
    for root in decision.criteria:
        if root.kind == "selection" and root.result is Tri.MET:
            continue  # the route to this service (initial or repeat request) is not a finding
        if root.kind == "non-indication":
            _non_indications(root, out)
        else:
            _request(root, out, top=True)
    return out


def _non_indications(root: CriterionResult, out: Explanation) -> None:
    parts = root.children if root.logic in ("any", "all") else [root]
    for part in parts:
        if part.result is Tri.NOT_MET:
            out.absent.append(part.text)
        elif part.result is Tri.MET:
            out.failing.extend(_leaves(part, Tri.MET))
        else:
            out.unknown.extend(_leaves(part, Tri.UNKNOWN))


def _request(node: CriterionResult, out: Explanation, top: bool = False) -> None:
    """Sort one request criterion (indications, frequency, setting ...) by what decided it."""
    if node.result is Tri.MET:
        out.met.extend(c.text for c in _met_route(node, top))
        return
    if node.logic in ("leaf", "ref", "not") or not node.children:
        (out.failing if node.result is Tri.NOT_MET else out.unknown).append(node)
        return
    if node.logic == "any" and node.result is Tri.NOT_MET and not top:
        out.failing.append(node)  # "any red flag": one line, not one per flag
        return
    for child in node.children:
        if node.logic == "all" and child.result is Tri.MET and not top:
            continue  # a met part of an unmet whole is not what the clinician acts on
        _request(child, out)


def _met_route(node: CriterionResult, top: bool) -> list[CriterionResult]:
    """What met a criterion, as a reader names it: the parts of a top group, the route an "any" took."""
    if node.logic == "any" and node.children:
        return [r for c in node.children if c.result is Tri.MET for r in _met_route(c, False)]
    if top and node.logic == "all" and node.children:
        return [c for c in node.children if c.result is Tri.MET]
    return [node]


def _leaves(node: CriterionResult, value: Tri) -> list[CriterionResult]:
    """The criteria under ``node`` that carry ``value`` down to a reader's level (a leaf, a ref, a negation)."""
    if node.logic in ("leaf", "ref", "not") or not node.children:
        return [node]
    return [leaf for c in node.children if c.result is value for leaf in _leaves(c, value)]


def fact(node: CriterionResult, words: PlainWords) -> str:
    """What the record (or an answer) shows for one criterion, in plain words; "" when nothing is shown."""
    if node.logic in ("ref", "not") and node.children:
        return fact(node.children[0], words)
    if node.logic == "any" and node.result is Tri.NOT_MET:
        return "none (checked: " + "; ".join(c.text for c in node.children) + ")"
    if node.children:
        return ""
    text = words.fact(node.reason)
    if text.startswith("not documented"):
        return ""
    return re.sub(r"(?<=\S) \(checked: [^()]*\)$", "", text)  # what was checked matters only when nothing was found


def grouped_lines(nodes: list[CriterionResult], mark: str, words: PlainWords) -> list[str]:
    """Bullets for criteria, each once; criteria with the same fact share one bullet; at most a few shown."""
    by_fact: dict[str, list[str]] = {}
    for node in nodes:
        texts = by_fact.setdefault(fact(node, words), [])
        if node.text not in texts:  # one criterion reached twice, or two with the same words
            texts.append(node.text)
    lines = [
        f"- {mark} {md('; '.join(texts))}" + (f" — {md(shown)}" if shown else "") for shown, texts in by_fact.items()
    ]
    if len(lines) > _LINES:
        lines = [*lines[:_LINES], f"- … and {len(lines) - _LINES} more on the decision page"]
    return lines


def met_line(explanation: Explanation) -> str:
    """At most one line of good news: what was met and which non-indications were checked and not found."""
    parts = []
    if explanation.met:
        names = list(dict.fromkeys(explanation.met))
        more = f" and {len(names) - _MET_ITEMS} more" if len(names) > _MET_ITEMS else ""
        parts.append(f"✓ **Met:** {md('; '.join(names[:_MET_ITEMS]))}{more}.")
    if explanation.absent:
        checked = "; ".join(explanation.absent)
        parts.append(f"✓ No red flags or contraindications recorded (checked: {md(checked)}).")
    return " ".join(parts)


def question_lines(carepath: CarePath, decision: OrderDecision) -> list[str]:
    """The questions the decision still needs answered, numbered as the card counts them.

    These are the questionnaire's required, unanswered items (``dtr_response.open_questions``):
    what the record or an earlier response already answers comes pre-filled and is not counted.
    When every question is pre-filled, they are listed to be confirmed instead.
    """
    asked = open_questions(decision) or decision.questions
    return [f"{n}. {md(carepath.questions[q].text if q in carepath.questions else q)}" for n, q in enumerate(asked, 1)]


def answers_needed(decision: OrderDecision) -> str:
    """ "4 answers needed": the questionnaire's required, unanswered items; else the pre-filled ones to confirm."""
    n = len(open_questions(decision))
    if n == 0 and decision.questions:
        n = len(decision.questions)
        return f"{n} pre-filled answer{'s' if n != 1 else ''} to confirm"
    return f"{n} answer{'s' if n != 1 else ''} needed"


def next_step(decision: OrderDecision) -> str:
    """The one next step of a not-approved order: the first alternative the guideline proposes, else review."""
    for alt in decision.alternatives:
        text = str(alt.get("text", ""))
        step = text.split(": ", 1)[-1]
        return sentence_case(step.split(", which", 1)[0])
    return "plan review if signed"


def outcome_headline(decision: OrderDecision) -> str:
    """The heading over the failing lines, by outcome."""
    if decision.outcome is Outcome.CONTRAINDICATED:
        return "**Recorded, and the guideline says the service may not be appropriate:**"
    if decision.outcome is Outcome.NOT_MET:
        return "**Not met:**"
    return "**Other routes in the guideline, not shown in the record** (the answers above may still qualify it):"
