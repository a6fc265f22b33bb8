"""Points in time typed by people (``--since``), as epoch milliseconds, and back.

Accepted forms:

- ISO-8601 with ``Z`` or an offset: ``2025-11-28T10:00:00Z``, ``2025-11-28T10:00:00.250+01:00``
  (a time without a zone is refused: it would depend on the machine's time zone);
- a date alone: ``2025-11-28`` (midnight UTC);
- epoch milliseconds: ``1764324000000``;
- ``now``, and relative to now: ``-2h``, ``-15m``, ``-90s``, ``-1d``, ``-500ms``, ``+10m``.

>>> parse_time("2025-11-28T10:00:00Z")
1764324000000
>>> format_time(parse_time("-1h", now_ms=1764324000000))
'2025-11-28T09:00:00Z'
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta

__all__ = ["ACCEPTED_FORMS", "format_time", "parse_time"]

ACCEPTED_FORMS = ("ISO-8601 with Z or an offset (2025-11-28T10:00:00Z, "
                  "2025-11-28T10:00:00.250+01:00), a date (2025-11-28 = midnight UTC), "
                  "epoch milliseconds (1764324000000), now, or relative to now "
                  "(-2h, -15m, -90s, -1d, -500ms, +10m)")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_RELATIVE = re.compile(r"([+-])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Epoch milliseconds have 13 digits today; 11 is 1973. Fewer digits are most likely seconds.
_MIN_EPOCH_MS_DIGITS = 11


def _problem(text: str, why: str = "not a time I understand") -> ValueError:
    return ValueError(f"{text!r}: {why}; accepted: {ACCEPTED_FORMS}")


def _clock_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_time(text: str, now_ms: int | None = None) -> int:
    """Parse a point in time into epoch milliseconds (UTC).

    ``now_ms`` is "now" for ``now`` and the relative forms (default: the clock).

    >>> parse_time("2025-11-28T10:00:00Z")
    1764324000000
    >>> parse_time("2025-11-28T10:00:00.250+01:00")
    1764320400250
    >>> parse_time("2025-11-28")
    1764288000000
    >>> parse_time("1764324000000")
    1764324000000
    >>> parse_time("-2h", now_ms=1764324000000), parse_time("+10m", now_ms=1764324000000)
    (1764316800000, 1764324600000)
    >>> parse_time("now", now_ms=42)
    42
    >>> parse_time("2025-11-28T10:00:00")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: '2025-11-28T10:00:00': no time zone, so the time is ambiguous; add Z (UTC) or an offset such as +01:00, e.g. 2025-11-28T10:00:00Z; accepted: ...
    """  # noqa: E501
    if not isinstance(text, str):
        raise _problem(str(text), f"expected a string, got {type(text).__name__}")
    given = text
    text = text.strip()
    if not text:
        raise _problem(given, "empty")
    if text.lower() == "now":
        return _clock_ms() if now_ms is None else int(now_ms)
    relative = _RELATIVE.fullmatch(text)
    if relative:
        sign, amount, unit = relative.groups()
        delta = round(float(amount) * _UNIT_MS[unit.lower()])
        base = _clock_ms() if now_ms is None else int(now_ms)
        return base - delta if sign == "-" else base + delta
    if _DIGITS.fullmatch(text):
        if len(text) < _MIN_EPOCH_MS_DIGITS:
            raise _problem(given, "too few digits for epoch milliseconds (13 digits today; "
                                  "epoch seconds need 000 appended)")
        return int(text)
    if _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError as exc:
            raise _problem(given, f"not a valid date ({exc})") from None
        return _to_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
    if not _DATE.match(text):
        raise _problem(given)
    iso = text[:-1] + "Z" if text.endswith("z") else text
    iso = iso[:10] + "T" + iso[11:] if len(iso) > 10 and iso[10] in "t " else iso
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError as exc:
        raise _problem(given, f"not a valid ISO-8601 time ({exc})") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        example = moment.replace(microsecond=0).isoformat()
        raise _problem(given, "no time zone, so the time is ambiguous; add Z (UTC) or an offset "
                              f"such as +01:00, e.g. {example}Z")
    return _to_ms(moment)


def _to_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _ONE_MS


def format_time(ms: int | None) -> str:
    """Epoch milliseconds as UTC ISO-8601 (milliseconds shown when not zero); ``-`` for None.

    >>> format_time(1764324000000)
    '2025-11-28T10:00:00Z'
    >>> format_time(1764320400250)
    '2025-11-28T09:00:00.250Z'
    >>> format_time(None)
    '-'
    """
    if ms is None:
        return "-"
    moment = _EPOCH + timedelta(milliseconds=int(ms))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    millis = int(ms) % 1000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"
