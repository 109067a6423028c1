"""Load CarePath files from disk: the only place that reads guideline files.

A CarePath is one JSON file, validated by ``carepaths/carepath.schema.json``
and the engine's operator registry when it loads; a broken file fails here,
at start-up, with the JSON path at fault.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cds_server.engine import CarePath, InvalidCarePathError, compile_carepath
from fhir_mappings.terminology import InvalidTerminologyError, Terminology, parse_terminology

CAREPATH_DIR = Path(__file__).parent / "carepaths"
SCHEMA_PATH = CAREPATH_DIR / "carepath.schema.json"
DEFAULT_CAREPATHS = (CAREPATH_DIR / "neck-pain.json",)
TERMINOLOGY_DIR = Path(__file__).parent / "terminology"
DEFAULT_TERMINOLOGY = TERMINOLOGY_DIR / "terminology.json"
TERMINOLOGY_SCHEMA = TERMINOLOGY_DIR / "terminology.schema.json"


def load_schema() -> dict[str, Any]:
    """Return the CarePath JSON Schema."""
    with SCHEMA_PATH.open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


def read_document(path: Path) -> Any:
    """Parse a CarePath file, turning JSON syntax errors into InvalidCarePathError."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise InvalidCarePathError(
            "$", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", path.name
        ) from exc
    except OSError as exc:
        raise InvalidCarePathError("$", f"cannot read file: {exc.strerror}", path.name) from exc


def load_carepath(path: Path | str, overrides: Mapping[str, Any] | None = None) -> CarePath:
    """Load, validate and compile one CarePath file.

    :raises InvalidCarePathError: naming the file and the JSON path at fault.
    """
    path = Path(path)
    return compile_carepath(read_document(path), load_schema(), overrides, source=path.name)


def load_carepaths(
    paths: tuple[Path | str, ...] = DEFAULT_CAREPATHS, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> list[CarePath]:
    """Load several CarePaths; ``overrides`` maps a CarePath id to its parameter overrides."""
    overrides = overrides or {}
    loaded = []
    for path in paths:
        doc = read_document(Path(path))
        cp_overrides = overrides.get(doc.get("id", "")) if isinstance(doc, dict) else None
        loaded.append(compile_carepath(doc, load_schema(), cp_overrides, source=Path(path).name))
    ids = [cp.id for cp in loaded]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidCarePathError("$.id", f"CarePath id loaded twice: {', '.join(duplicates)}")
    return loaded


def load_terminology(path: Path | str = DEFAULT_TERMINOLOGY) -> Terminology:
    """Load and schema-validate a terminology file (cached: the shipped one is read once per process).

    :raises InvalidTerminologyError: naming the JSON path at fault.
    """
    return _load_terminology(Path(path).resolve())


@functools.lru_cache(maxsize=4)
def _load_terminology(path: Path) -> Terminology:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidTerminologyError(f"$: not JSON ({exc.msg}, line {exc.lineno})") from exc
    schema = json.loads(TERMINOLOGY_SCHEMA.read_text(encoding="utf-8"))
    return parse_terminology(doc, schema)


_TERMINOLOGIES: list[tuple[tuple[CarePath, ...], Terminology]] = []


def terminology_for(carepaths: Sequence[CarePath]) -> Terminology:
    """The terminology the record reader uses with these CarePaths loaded.

    The shared terminology file knows products, ingredients and SNOMED classes; every
    code a loaded CarePath lists in a value set is known too (an author who lists a code
    has said what it means). Cached per set of loaded CarePath objects (held, so that an
    object id is never reused for another CarePath while its entry lives).
    """
    key = tuple(carepaths)
    for held, terminology in _TERMINOLOGIES:
        if len(held) == len(key) and all(a is b for a, b in zip(held, key, strict=True)):
            return terminology
    codes = {code for cp in carepaths for vs in cp.value_sets.values() for code in vs.matcher.exact}
    terminology = load_terminology().with_known(codes)
    _TERMINOLOGIES.append((key, terminology))
    del _TERMINOLOGIES[:-8]  # a process loads its CarePaths once; tests load a few
    return terminology
