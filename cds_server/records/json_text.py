"""JSON text written with orjson where it is what the service wrote with ``json.dumps`` (or may be, for storage).

Two spellings, each about seven times faster than ``json.dumps`` on what a call holds:

- ``stored_json``: a record's JSON column. The same values read back; only the spelling may
  differ (no spaces, UTF-8, ``1e-05`` as ``0.00001``).
- ``canonical_json``: what an audit digest is made of, byte for byte ``json.dumps(sort_keys=True,
  separators=(",", ":"), ensure_ascii=False, default=str)`` in UTF-8, as every digest was made.

orjson's bytes are taken as the canonical form only when they are certainly ``json.dumps``'s: it
refuses an integer beyond 64 bits, a lone surrogate and a key that is not a string, and hands
dates, dataclasses and subclasses of str, int, dict and list to ``_refuse``; a ``null`` (a NaN is
written so), a float below 1e-4 (orjson spells ``1e-05`` as ``0.00001`` and ``1e-07`` as ``1e-7``)
or text that looks like one sends the value to ``json.dumps``, which also raises for what it
cannot write. The values are what JSON parsing or the pipeline builds: a UUID or a plain enum,
which ``json.dumps`` refuses without ``default`` (so no record holds one), orjson would write as
its string or value. ``tests/test_json_fast.py`` holds the canonical form to ``json.dumps``'s
bytes on every character, every float magnitude and every scenario request and answer.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
_SORTED = orjson.OPT_SORT_KEYS | _PASSTHROUGH
# orjson's 1e-7 (Python writes 1e-07): a number ends at a comma, a bracket or the end; a UUID's "3e-4b" does not
_SHORT_EXPONENT = re.compile(rb"[0-9]e-[0-9](?=[,\]}]|\Z)")


def stored_json(value: Any) -> str:
    """The text of a JSON column (the store's ``json_serializer``)."""
    try:
        return orjson.dumps(value, default=_refuse, option=_PASSTHROUGH).decode()
    except TypeError:
        return json.dumps(value)


def canonical_json(value: Any) -> bytes:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)`` in UTF-8."""
    fast = _orjson(value, _SORTED)
    if fast is not None and not _may_differ(fast):
        return fast
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return canonical.encode("utf-8", "surrogatepass")


def surely_without_empties(value: Any) -> bool:
    """True only when no ``null``, ``""``, ``[]`` or ``{}`` is anywhere in ``value``; False says nothing.

    orjson writes each of them so, and nothing else contains those bytes outside a string (inside
    one, e.g. ``"say \\"x\\""``, they only send the value to the slow walk that answers exactly).
    """
    fast = _orjson(value, _PASSTHROUGH)
    return fast is not None and b'""' not in fast and b"[]" not in fast and b"{}" not in fast and b"null" not in fast


def _orjson(value: Any, option: int) -> bytes | None:
    try:
        return orjson.dumps(value, default=_refuse, option=option)
    except TypeError:
        return None


def _may_differ(fast: bytes) -> bool:
    """Whether orjson's bytes may not be ``json.dumps``'s (a NaN, a float below 1e-4, or text like them)."""
    return b"null" in fast or b"0.0000" in fast or (b"e-" in fast and _SHORT_EXPONENT.search(fast) is not None)


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)
