"""FHIR date, dateTime and instant values reduced to calendar dates.

The guideline's windows are counted in days and weeks, so every clinical
timestamp is compared as a date. Partial dates (``2024`` or ``2024-03``)
take their first day, the earliest instant they could mean; a value that
does not parse is treated as absent, never guessed.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timedelta
from typing import Any

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def parse_date(value: Any) -> date | None:
    """Return the calendar date of a FHIR date/dateTime/instant string, or None.

    >>> parse_date("2024-03-05T10:00:00Z")
    datetime.date(2024, 3, 5)
    >>> parse_date("2024-03")
    datetime.date(2024, 3, 1)
    >>> parse_date("yesterday") is None
    True
    """
    bounds = date_bounds(value)
    return bounds[0] if bounds else None


def date_bounds(value: Any) -> tuple[date, date] | None:
    """Return the first and last calendar day a FHIR date/dateTime may mean, or None.

    A reduced-precision value (``2024``, ``2024-03``) spans its year or month;
    product-decisions.md §5 asks each comparison to take the bound least
    favourable to approval, so both ends are kept.

    >>> date_bounds("2024-02")
    (datetime.date(2024, 2, 1), datetime.date(2024, 2, 29))
    >>> date_bounds("2023")
    (datetime.date(2023, 1, 1), datetime.date(2023, 12, 31))
    >>> date_bounds("2024-03-05T23:30:00-05:00")
    (datetime.date(2024, 3, 5), datetime.date(2024, 3, 5))
    """
    if type(value) is str:
        return _bounds(value)
    return _bounds(str(value)) if isinstance(value, str) else None


@functools.lru_cache(maxsize=16384)
def _bounds(value: str) -> tuple[date, date] | None:
    """date_bounds of a string, remembered: a record repeats the same few hundred dates."""
    match = _DATE.match(value.strip())
    if not match:
        return None
    year, month, day = match.groups()
    try:
        if day:
            exact = date(int(year), int(month), int(day))
            return exact, exact
        if month:
            first = date(int(year), int(month), 1)
            following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
            return first, following - timedelta(days=1)
        return date(int(year), 1, 1), date(int(year), 12, 31)
    except ValueError:
        return None


def parse_datetime(value: Any) -> datetime | None:
    """Return a timezone-aware datetime for a full FHIR dateTime/instant, else None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def period_bounds(period: Any) -> tuple[date | None, date | None]:
    """Return (start, end) dates of a FHIR Period."""
    if not isinstance(period, dict):
        return None, None
    return parse_date(period.get("start")), parse_date(period.get("end"))


def weeks_between(start: date, end: date) -> float:
    """Return the number of weeks from ``start`` to ``end`` (negative if reversed)."""
    return (end - start).days / 7.0


def age_in_years(birth: date, on: date) -> int:
    """Return completed years of age on ``on``."""
    years = on.year - birth.year
    if (on.month, on.day) < (birth.month, birth.day):
        years -= 1
    return years


_INSTANT = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z", re.ASCII)


def canonical_instant(text: str) -> str:
    """Return the one spelling kept for an ``outcomeTimestamp``: seconds, the fraction without trailing zeros, ``Z``.

    ``…T10:00:00Z``, ``…T10:00:00.0Z`` and ``…T10:00:00.000Z`` are one instant and all give
    ``…T10:00:00Z``, so feedback is kept once whichever way a client writes the time. Every
    digit given (up to nanoseconds) is kept: two different instants never share a spelling.

    :raises ValueError: not a UTC (``Z``) instant with at most 9 fractional digits, or not a real date and time.
    """
    match = _INSTANT.fullmatch(text)
    if match is None:
        raise ValueError(f"not a UTC instant: {text[:60]!r}")
    datetime.fromisoformat(match[1])  # a real date and time: no 30 February, no hour 24
    fraction = (match[2] or "").rstrip("0")
    return f"{match[1]}.{fraction}Z" if fraction else f"{match[1]}Z"
