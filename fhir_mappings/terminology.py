"""Terminology knowledge: which codes the service understands, and what they classify as.

EHRs send codes that CarePath value sets do not list: RxNorm *product* codes
and NDCs where a value set lists ingredient RxCUIs and ATC classes, SNOMED CT
findings where a value set lists ICD-10-CM codes. The record reader must fail
closed, so it needs two answers for every code: is it understood at all
(``is_known``), and which listed codes does it stand for (``expand``).

The knowledge lives in ``cds_server/terminology/terminology.json`` (schema
beside it). This module loads it once, validates it, and precomputes plain
dicts so every lookup is a dict access: it runs per coding on the request path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jsonschema

from fhir_mappings.codes import Code
from fhir_mappings.systems import ATC, ICD10CM, NDC, RXNORM, normalize_code, normalize_system

_ICD10CM_PATTERN = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")


class InvalidTerminologyError(ValueError):
    """The terminology file is malformed; the message names the JSON path of the fault."""


def is_icd10cm_syntax(code: str) -> bool:
    """Return True when ``code`` has the shape of a (dotted) ICD-10-CM code.

    >>> is_icd10cm_syntax("M54.2"), is_icd10cm_syntax("S13.4XXA"), is_icd10cm_syntax("54.2")
    (True, True, False)
    """
    return bool(_ICD10CM_PATTERN.match(code))


def normalize_ndc(code: str) -> str | None:
    """Return the 11-digit (5-4-2) form of an NDC, or None when it cannot be told.

    Labels print 10-digit NDCs in three hyphenated layouts (4-4-2, 5-3-2,
    5-4-1); the 11-digit billing form pads the short segment with a zero. An
    unhyphenated 10-digit NDC is ambiguous (the layout is lost), so it is not
    guessed: a wrong guess would name a different package.

    >>> normalize_ndc("0056-0172-70"), normalize_ndc("00056-0172-70"), normalize_ndc("00056017270")
    ('00056017270', '00056017270', '00056017270')
    >>> normalize_ndc("12345-678-90"), normalize_ndc("12345-6789-1"), normalize_ndc("0056017270")
    ('12345067890', '12345678901', None)
    """
    code = code.strip()
    parts = code.split("-")
    if len(parts) == 1:
        return code if len(code) == 11 and code.isdigit() else None
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    widths = tuple(len(p) for p in parts)
    if widths == (5, 4, 2):
        return "".join(parts)
    if widths == (4, 4, 2):
        return "0" + "".join(parts)
    if widths == (5, 3, 2):
        return parts[0] + "0" + parts[1] + parts[2]
    if widths == (5, 4, 1):
        return parts[0] + parts[1] + "0" + parts[2]
    return None


def _unit_key(unit: str) -> str:
    """Unit spellings compared without spaces and case (EHRs write K/uL, k/uL, 10^3/UL)."""
    return "".join(unit.split()).lower()


_CLASSIFIED_LIMIT = 65536  # distinct codes remembered per terminology before the memory is cleared
_UNSEEN: Any = object()
_SAME: Any = object()  # convert(): the value is already in a wanted unit


def _remember(memory: dict[Any, Any], code: Any, answer: Any) -> Any:
    """Keep ``answer`` for ``code`` (the memory is cleared when full: odd inputs cannot grow it without bound)."""
    if len(memory) >= _CLASSIFIED_LIMIT:
        memory.clear()
    memory[code] = answer
    return answer


@dataclass(frozen=True)
class Terminology:
    """Precomputed, read-only lookups over the terminology file.

    Build it with :func:`parse_terminology` (from a file: ``cds_server.carepath_store.load_terminology``);
    the constructor fields are the
    precomputed tables and are not meant to be filled by hand.
    """

    version: str
    policies: Mapping[str, str] = field(default_factory=dict, repr=False)
    expansions: Mapping[Code, frozenset[Code]] = field(default_factory=dict, repr=False)
    listed: frozenset[Code] = field(default_factory=frozenset, repr=False)
    extra_known: frozenset[Code] = field(default_factory=frozenset, repr=False)
    text_terms: Mapping[str, frozenset[Code]] = field(default_factory=dict, repr=False)
    text_pattern: re.Pattern[str] | None = field(default=None, repr=False)
    units: Mapping[tuple[str, str], tuple[float, float]] = field(default_factory=dict, repr=False)
    canonical_units: Mapping[str, str] = field(default_factory=dict, repr=False)
    # classify()'s answers, kept for the life of this (immutable) terminology; bounded against odd inputs.
    _classified: dict[Code, frozenset[Code] | None] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _with_classes: dict[Code, frozenset[Code] | None] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    # convert()'s conversion per (unit, targets): the same few a record's results repeat; bounded like the above.
    _conversions: dict[tuple[str, tuple[str, ...]], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @staticmethod
    def _key(code: Code) -> Code:
        """Normalise a code the way the tables were built (NDC layouts included)."""
        system = normalize_system(code[0])
        value = normalize_code(system, code[1])
        if system == NDC:
            value = normalize_ndc(value) or value
        return system, value

    def expand(self, code: Code) -> frozenset[Code]:
        """Equivalent/classifying codes of one code, NOT including itself.

        product/NDC -> ingredient RxCUIs (RXNORM) and their ATC codes;
        ingredient -> its ATC codes; SNOMED -> mapped ICD-10-CM codes. Empty
        when none. A value set that lists the ingredient, the ATC class or
        the ICD-10-CM code then matches what the EHR actually sent.
        """
        return self.expansions.get(self._key(code), frozenset())

    def is_known(self, code: Code) -> bool:
        """True when the system's policy is complete, or the code is listed here or added with with_known().

        Everything else, local or proprietary systems included, is not
        understood: the caller must not read its absence from a value set as
        "the patient does not have it".
        """
        key = self._key(code)
        if self.policies.get(key[0]) == "complete":
            return True
        return key in self.listed or key in self.extra_known

    def classify(self, code: Code) -> frozenset[Code] | None:
        """``expand(code)`` when the code is known, None when it is not: the reader's one question per code.

        Asked for every coding of every record, so the answer is remembered (the tables never change).
        """
        found = self._classified.get(code, _UNSEEN)
        if found is not _UNSEEN:
            return found
        return _remember(self._classified, code, self.expand(code) if self.is_known(code) else None)

    def with_classes(self, code: Code) -> frozenset[Code] | None:
        """``{code} | classify(code)`` when the code is known, None when it is not (remembered, like classify)."""
        found = self._with_classes.get(code, _UNSEEN)
        if found is not _UNSEEN:
            return found
        expansion = self.classify(code)
        return _remember(self._with_classes, code, None if expansion is None else expansion | {code})

    def classify_text(self, text: str) -> frozenset[Code]:
        """Ingredient RxCUIs (+ their ATC codes) named in a medication text or display.

        Whole-word, case-insensitive match of ingredient names, synonyms and
        brand names ("Warfarin Sodium 5 MG Oral Tablet", "ELIQUIS 5mg tab",
        "apixaban [Eliquis]"). Empty when nothing matches. This is the
        fallback for product codes this file does not list: RxNorm displays
        start with the ingredient names, so the text names what the code is.
        """
        if not text or self.text_pattern is None:
            return frozenset()
        found: set[Code] = set()
        for match in self.text_pattern.finditer(text):
            found |= self.text_terms.get(match.group(0).lower(), frozenset())
        return frozenset(found)

    def with_known(self, codes: Iterable[Code]) -> Terminology:
        """A copy that also treats these codes as known (the loaded CarePaths' value-set members)."""
        added = frozenset(self._key(c) for c in codes)
        return replace(self, extra_known=self.extra_known | added)

    def to_unit(self, quantity: str, value: float, unit: str) -> float | None:
        """``value`` converted to the canonical unit of ``quantity``, None when the unit is not listed.

        Thresholds in the CarePath are written in one unit (platelets in
        10*3/uL, glucose in mg/dL); labs report in many spellings.
        """
        conversion = self.units.get((quantity, _unit_key(unit or "")))
        if conversion is None:
            return None
        factor, offset = conversion
        return value * factor + offset

    def convert(self, value: float, unit: str, targets: Iterable[str]) -> float | None:
        """``value`` in the first of ``targets`` it can be expressed in, None when none fits.

        A criterion names the units its threshold is written in; a result in another
        spelling or scale of the same quantity is converted, any other is left unread.
        """
        key = (unit, tuple(targets))
        conversion = self._conversions.get(key, _UNSEEN)
        if conversion is _UNSEEN:
            conversion = _remember(self._conversions, key, self._conversion(unit, key[1]))
        if conversion is _SAME:
            return value
        if conversion is None:
            return None
        factor, offset = conversion
        return value * factor + offset

    def _conversion(self, unit: str, targets: tuple[str, ...]) -> Any:
        """What :meth:`convert` does to a value in ``unit``: nothing (``_SAME``), the ``(factor, offset)`` of
        the first quantity whose canonical unit is wanted and that lists ``unit`` (as :meth:`to_unit`), or
        None."""
        wanted = [_unit_key(t) for t in targets]
        if _unit_key(unit or "") in wanted:
            return _SAME
        for quantity, canonical in self.canonical_units.items():
            if _unit_key(canonical) in wanted:
                conversion = self.units.get((quantity, _unit_key(unit or "")))
                if conversion is not None:
                    return conversion
        return None

    def canonical_unit(self, quantity: str) -> str | None:
        """The unit :meth:`to_unit` converts ``quantity`` to, None when the quantity is not listed."""
        return self.canonical_units.get(quantity)


def _error_path(error: jsonschema.ValidationError) -> str:
    """JSON path of a schema error, e.g. ``$.products[3].ingredients``."""
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _validate(doc: Any, schema: Mapping[str, Any]) -> None:
    """Schema-check the document, then the cross-references a schema cannot express."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        first = errors[0]
        raise InvalidTerminologyError(f"{_error_path(first)}: {first.message}")
    seen_systems: set[str] = set()
    for i, row in enumerate(doc["systems"]):
        system = normalize_system(row["system"])
        if system in seen_systems:
            raise InvalidTerminologyError(f"$.systems[{i}].system: duplicate system {system}")
        seen_systems.add(system)
    rxcuis: set[str] = set()
    for i, row in enumerate(doc["ingredients"]):
        if row["rxcui"] in rxcuis:
            raise InvalidTerminologyError(f"$.ingredients[{i}].rxcui: duplicate RxCUI {row['rxcui']}")
        rxcuis.add(row["rxcui"])
    _check_products(doc["products"], "products", "RxCUI", rxcuis, frozenset(rxcuis))
    _check_products(doc["ndc"], "ndc", "NDC", rxcuis, frozenset())
    _check_maps(doc["maps"])
    _check_units(doc["units"])


def _check_products(
    rows: list[Mapping[str, Any]], section: str, kind: str, ingredients: set[str], taken: frozenset[str]
) -> None:
    """Each product (or NDC) listed once, not as one of ``taken`` either, and made of known ingredients."""
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if row["code"] in seen or row["code"] in taken:
            raise InvalidTerminologyError(f"$.{section}[{i}].code: duplicate {kind} {row['code']}")
        seen.add(row["code"])
        for j, ing in enumerate(row["ingredients"]):
            if ing not in ingredients:
                raise InvalidTerminologyError(f"$.{section}[{i}].ingredients[{j}]: RxCUI {ing} is not an ingredient")


def _check_maps(rows: list[Mapping[str, Any]]) -> None:
    """Each map source listed once, and every ICD-10-CM target spelled as one."""
    sources: set[Code] = set()
    for i, row in enumerate(rows):
        key = (normalize_system(row["from"]["system"]), row["from"]["code"])
        if key in sources:
            raise InvalidTerminologyError(f"$.maps[{i}].from: duplicate map source {key[1]}")
        sources.add(key)
        for j, target in enumerate(row["to"]):
            if normalize_system(target["system"]) == ICD10CM and not is_icd10cm_syntax(target["code"]):
                raise InvalidTerminologyError(f"$.maps[{i}].to[{j}].code: not an ICD-10-CM code: {target['code']}")


def _check_units(rows: list[Mapping[str, Any]]) -> None:
    """Each quantity converts to one unit, and each spelling of a unit is listed once per quantity."""
    canonical: dict[str, str] = {}
    spellings: set[tuple[str, str]] = set()
    for i, row in enumerate(rows):
        if canonical.setdefault(row["quantity"], row["to"]) != row["to"]:
            raise InvalidTerminologyError(
                f"$.units[{i}].to: {row['quantity']} already converts to {canonical[row['quantity']]}"
            )
        for j, unit in enumerate(row["from"]):
            key = (row["quantity"], _unit_key(unit))
            if key in spellings:
                raise InvalidTerminologyError(f"$.units[{i}].from[{j}]: unit {unit!r} listed twice")
            spellings.add(key)


def _compile(doc: Mapping[str, Any]) -> Terminology:
    """Turn a validated document into the dict-backed lookup object."""
    expansions: dict[Code, set[Code]] = {}
    listed: set[Code] = set()
    terms = _drugs(doc, expansions, listed)
    for row in doc["maps"]:
        src_system = normalize_system(row["from"]["system"])
        key = (src_system, normalize_code(src_system, row["from"]["code"]))
        listed.add(key)
        target = expansions.setdefault(key, set())
        for t in row["to"]:
            t_system = normalize_system(t["system"])
            target.add((t_system, normalize_code(t_system, t["code"])))
    for key, value in expansions.items():
        value.discard(key)
    units: dict[tuple[str, str], tuple[float, float]] = {}
    canonical: dict[str, str] = {}
    for row in doc["units"]:
        canonical[row["quantity"]] = row["to"]
        for unit in row["from"]:
            units[(row["quantity"], _unit_key(unit))] = (float(row["factor"]), float(row.get("offset", 0.0)))
    return Terminology(
        version=doc["version"],
        policies={normalize_system(r["system"]): r["policy"] for r in doc["systems"]},
        expansions={k: frozenset(v) for k, v in expansions.items() if v},
        listed=frozenset(listed),
        text_terms={k: frozenset(v) for k, v in terms.items()},
        text_pattern=_names_pattern(terms),
        units=units,
        canonical_units=canonical,
    )


def _drugs(doc: Mapping[str, Any], expansions: dict[Code, set[Code]], listed: set[Code]) -> dict[str, set[Code]]:
    """Fill the expansions of ingredients, products and NDCs; return the codes each drug name stands for."""
    ingredient_codes: dict[str, frozenset[Code]] = {}
    terms: dict[str, set[Code]] = {}
    for row in doc["ingredients"]:
        atc = {(ATC, normalize_code(ATC, a)) for a in row["atc"]}
        own = frozenset({(RXNORM, row["rxcui"])} | atc)
        ingredient_codes[row["rxcui"]] = own
        listed.add((RXNORM, row["rxcui"]))
        if atc:
            expansions[(RXNORM, row["rxcui"])] = set(atc)
        for term in [row["name"], *row["synonyms"], *row["brands"]]:
            terms.setdefault(term.lower(), set()).update(own)
    for section, system in (("products", RXNORM), ("ndc", NDC)):
        for row in doc[section]:
            key = (system, row["code"])
            listed.add(key)
            target = expansions.setdefault(key, set())
            for ing in row["ingredients"]:
                target |= ingredient_codes[ing]
    return terms


def _names_pattern(terms: Mapping[str, Any]) -> re.Pattern[str] | None:
    """One whole-word, case-insensitive pattern of every drug name, longest first."""
    alternatives = sorted(terms, key=len, reverse=True)
    if not alternatives:
        return None
    return re.compile(
        r"(?<![A-Za-z0-9])(?:" + "|".join(re.escape(t) for t in alternatives) + r")(?![A-Za-z0-9])",
        re.IGNORECASE,
    )


def parse_terminology(doc: Any, schema: Mapping[str, Any]) -> Terminology:
    """Validate an already-parsed document against ``schema`` and build the lookup object.

    Reading the file is :func:`cds_server.carepath_store.load_terminology`'s job: this
    package stays pure (no files), like the engine.
    """
    _validate(doc, schema)
    return _compile(doc)
