"""Plain words for card text: the engine's explanations rewritten for a clinician.

The engine explains each criterion for an auditor: value-set ids, raw codes with
their code system, resource references, answers as Python values. All of that
stays on the decision page. A card is read in five seconds by a clinician, so
this module turns an explanation into what a colleague would say: codes by
their display (from the CarePath's value sets, service codes, question options
or its ``displays`` table), answers as "Yes", "No" or the option's words,
record entries as the kind of record they are, and no value-set names.

Everything it knows comes from the CarePath document, so a second guideline
brings its own displays; nothing here names a guideline, code or drug.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from cds_server.engine import CarePath
from cds_server.engine.model import Question

# What a record entry is, in words (a reference such as ``Device/scs`` means nothing to a clinician).
_RECORD_WORDS = {
    "Condition": "a problem-list entry",
    "Observation": "an observation",
    "Procedure": "a procedure",
    "Device": "a device record",
    "AllergyIntolerance": "an allergy record",
    "DiagnosticReport": "a report",
    "ImagingStudy": "an imaging study",
    "MedicationRequest": "a prescription",
    "MedicationStatement": "a medication record",
    "MedicationDispense": "a dispensed medication",
    "MedicationAdministration": "an administered medication",
    "Encounter": "an encounter",
    "QuestionnaireResponse": "the documentation questionnaire",
    "ServiceRequest": "the order",
    "Patient": "the patient record",
    "Coverage": "the coverage",
}
# What a record section is, in "checked: ..." lists.
_SECTION_WORDS = {
    "Condition": "problem list",
    "Observation": "observations",
    "Procedure": "procedures",
    "Device": "devices",
    "AllergyIntolerance": "allergies",
    "DiagnosticReport": "reports",
    "ImagingStudy": "imaging",
    "MedicationRequest": "prescriptions",
    "MedicationStatement": "medications",
    "MedicationDispense": "dispensed medications",
    "MedicationAdministration": "administered medications",
    "Encounter": "encounters",
}
_STATE_WORDS = {"met": "yes", "not-met": "no", "unknown": "not documented"}
_BOOLEAN_WORDS = {"True": "Yes", "False": "No", "true": "Yes", "false": "No"}
_REF = re.compile(r"\b(" + "|".join(_RECORD_WORDS) + r")/[A-Za-z0-9\-.]+(?:#[\w.\-]+)?")
_VALUE_SETS = re.compile(r"\bVS-[A-Z0-9\-]+(?:,\s*VS-[A-Z0-9\-]+)*(?:\s+(?:in|results)\b)?\s*")
_ANSWER = re.compile(r"answered '(?P<value>[^']*)' to “(?P<question>[^”]*)”")
_STATE = re.compile(r"\b(?P<name>[a-z]+(?:[A-Z][a-z]+)*): (?P<state>met|not-met|unknown)\b(?: \((?P<detail>[^()]*)\))?")
_SAME_AS = re.compile(r"same criterion as [^:]+: ")
_NAMED_CODE = re.compile(
    r"\b(?:SNOMED CT|RxNorm|ICD-10-CM|LOINC|NDC|CPT|(?:https?|urn):[^\s,;()]+|its code) (?P<code>[\w.\-]*\d[\w.\-]*)"
    r"(?P<unread> not classified)?"
)
_REPLACEMENTS = ((" -> ", " → "), ("ordered in the order", "is ordered"), ("(s)", "s"))
_DATE_RUN = re.compile(r"(\d{4}-\d{2}-\d{2})(?:, \d{4}-\d{2}-\d{2})*, (\d{4}-\d{2}-\d{2})")
_CHECKED = re.compile(r"\(checked: (?P<what>[^()]*)\)")


def system_tail(system: str) -> str:
    """The name the engine prints for a code system: the last segment of its URI."""
    return system.rstrip("/").split("/")[-1]


def _codings(node: Any) -> Iterator[Mapping[str, Any]]:
    """Every object with a system, a code and a display anywhere in a CarePath document."""
    if isinstance(node, Mapping):
        if isinstance(node.get("code"), str) and isinstance(node.get("display"), str) and node.get("system"):
            yield node
        for value in node.values():
            yield from _codings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _codings(item)


def _all_questions(questions: Mapping[str, Question]) -> Iterator[Question]:
    for question in questions.values():
        yield question
        yield from _all_questions({q.link_id: q for q in question.items})


class PlainWords:
    """Rewrites the engine's explanations of one CarePath in a clinician's words."""

    def __init__(self, carepath: CarePath) -> None:
        self.exact: dict[tuple[str, str], str] = {}
        self.prefixes: dict[tuple[str, str], str] = {}
        for coding in _codings(carepath.document):
            key = (system_tail(str(coding["system"])), str(coding["code"]))
            table = self.prefixes if coding.get("match") == "prefix" else self.exact
            table.setdefault(key, str(coding["display"]))
        systems = {tail for tail, _ in [*self.exact, *self.prefixes]}
        alternation = "|".join(sorted((re.escape(s) for s in systems), key=len, reverse=True))
        self._code = re.compile(rf"(?P<code>[\w.\-]+) \((?P<system>{alternation})\)") if systems else None
        self.options: dict[str, dict[str, str]] = {}
        for question in _all_questions(carepath.questions):
            self.options[question.text] = {str(o["code"]): str(o["display"]) for o in question.options}

    def display(self, system_tail: str, code: str) -> str | None:
        """The display of a code: an exact listing first, else the longest listed prefix that covers it."""
        found = self.exact.get((system_tail, code))
        if found:
            return found
        for end in range(len(code), 0, -1):
            found = self.prefixes.get((system_tail, code[:end]))
            if found:
                return found
        return None

    def fact(self, reason: str) -> str:
        """One explanation of the engine in plain words (see the module docstring)."""
        text = _SAME_AS.sub("", reason)
        text = _ANSWER.sub(self._answer, text)
        if self._code is not None:
            text = self._code.sub(self._coded, text)
        text = _NAMED_CODE.sub(self._named, text)
        text = _STATE.sub(_state, text)
        text = _CHECKED.sub(_checked, text)
        text = _REF.sub(lambda m: _RECORD_WORDS[m.group(1)], text)
        text = _DATE_RUN.sub(r"\1 to \2", text).replace(", region any:", ":")
        text = (
            text.replace(" -> ", " → ")
            .replace("ordered in the order", "is ordered")
            .replace("session(s)", "sessions")
            .replace("unit(s)", "units")
        )
        return re.sub(r"\s{2,}", " ", text).strip()

    def answer_words(self, question_text: str, value: str) -> str:
        """An answer as the form shows it: "Yes", "No", the option's display, or the value as given."""
        options = self.options.get(question_text, {})
        words = []
        for part in value.split(", "):
            words.append(_BOOLEAN_WORDS.get(part) or options.get(part) or _unslug(part))
        return ", ".join(words)

    def _answer(self, match: re.Match[str]) -> str:
        question = match.group("question")
        return f"answered {self.answer_words(question, match.group('value'))} to “{question}”"

    def _named(self, match: re.Match[str]) -> str:
        """ "SNOMED CT 20262006 not classified" (the record reader's words) -> what it means to a reader."""
        if match.group("unread"):
            return "a code the service cannot classify"
        found = next((d for (_, code), d in self.exact.items() if code == match.group("code")), None)
        if match.group(0).startswith("its code"):
            return f"its code ({found})" if found else "its code"
        return found or "a code this guideline does not name"

    def _coded(self, match: re.Match[str]) -> str:
        shown = self.display(match.group("system"), match.group("code"))
        return shown if shown else "a code this guideline does not name"


def _unslug(value: str) -> str:
    """A choice code with no option display, as words ("none" -> "None of these")."""
    if value == "none":
        return "None of these"
    return value.replace("-", " ").capitalize() if re.fullmatch(r"[a-z][a-z\-]*", value) else value


def _state(match: re.Match[str]) -> str:
    name = re.sub(r"(?<!^)([A-Z])", r" \1", match.group("name")).lower()
    detail = match.group("detail")
    shown = f" ({detail})" if detail and detail.lower() != name else ""
    return f"{name}: {_STATE_WORDS[match.group('state')]}{shown}"


def _checked(match: re.Match[str]) -> str:
    """ "(checked: VS-A, VS-B in Condition, Observation in the last 180 days)" -> record sections in words."""
    what = _VALUE_SETS.sub("", match.group("what"))
    for resource_type, words in _SECTION_WORDS.items():
        what = re.sub(rf"\b{resource_type}\b", words, what)
    what = what.strip(" ,")
    return f"(checked: {what})" if what else ""


_WORDS: dict[int, tuple[CarePath, PlainWords]] = {}
_WORDS_KEPT = 16  # CarePaths are loaded once per app; a test run makes many apps


def plain_words(carepath: CarePath) -> PlainWords:
    """The :class:`PlainWords` of a loaded CarePath, built once (it walks every code the CarePath lists).

    Built per card it cost about half of a hook call. Keyed by the object itself (a CarePath
    is immutable once compiled), so an override that compiles another CarePath gets its own.
    """
    kept = _WORDS.get(id(carepath))
    if kept is not None and kept[0] is carepath:
        return kept[1]
    if len(_WORDS) >= _WORDS_KEPT:
        _WORDS.pop(next(iter(_WORDS)))
    words = PlainWords(carepath)
    _WORDS[id(carepath)] = (carepath, words)
    return words
