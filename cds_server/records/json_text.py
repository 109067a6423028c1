"""JSON text written with orjson where it is what the service wrote with ``json.dumps`` (or may be, for storage).

Three spellings, each about seven times faster than ``json.dumps`` on what a call holds:

- ``stored_json``: a record's JSON column. The same values read back; only the spelling may
  differ (no spaces, UTF-8, ``1e-05`` as ``0.00001``).
- ``canonical_json``: what an audit digest is made of, byte for byte ``json.dumps(sort_keys=True,
  separators=(",", ":"), ensure_ascii=False, default=str)`` in UTF-8, as every digest was made.
- ``compact_json``: an answer's body, byte for byte ``json.dumps(separators=(",", ":"),
  allow_nan=False)`` (ASCII, ``\\uXXXX`` escapes).

orjson's bytes are taken only when they are certainly ``json.dumps``'s: it refuses an integer beyond
64 bits, a lone surrogate and a key that is not a string, and hands dates, dataclasses and subclasses
of str, int, dict and list to ``_refuse``; a ``null`` (a NaN is written so), a float below 1e-4
(orjson spells ``1e-05`` as ``0.00001`` and ``1e-07`` as ``1e-7``), text that looks like one, or a
DEL character (escaped by ``ensure_ascii``) sends the value to ``json.dumps``, which also raises for
what it cannot write. The values are what JSON parsing or the pipeline builds: a UUID or a plain
enum, which ``json.dumps`` refuses without ``default`` (so no answer or record holds one), orjson
would write as its string or value. ``tests/test_json_fast.py`` holds
each to ``json.dumps``'s bytes on every character, every float magnitude and every scenario request.
"""

from __future__ import annotations

import codecs
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


def compact_json(value: Any) -> bytes:
    """``json.dumps(value, separators=(",", ":"), allow_nan=False)``, encoded (it is ASCII)."""
    fast = _orjson(value, _PASSTHROUGH)
    if fast is not None and not _may_differ(fast) and b"\x7f" not in fast:
        return fast if fast.isascii() else fast.decode().encode("ascii", _ESCAPE)
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")


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


def _ascii_escapes(error: UnicodeError) -> tuple[str, int]:
    """``ensure_ascii``'s escapes: ``\\u`` and four lowercase hex digits, a surrogate pair above U+FFFF."""
    assert isinstance(error, UnicodeEncodeError)
    escaped = []
    for char in error.object[error.start : error.end]:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            escaped.append(f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}")
        else:
            escaped.append(f"\\u{code:04x}")
    return "".join(escaped), error.end


_ESCAPE = "cds-json-ascii"
codecs.register_error(_ESCAPE, _ascii_escapes)
