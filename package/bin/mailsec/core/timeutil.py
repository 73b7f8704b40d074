"""UTC time helpers for the vendors' formats.

Every datetime that leaves this module is timezone-aware UTC; naive values coming
in are taken as UTC, because every vendor API this add-on talks to speaks UTC.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Union

UTC = timezone.utc

Instant = Union[datetime, float, int]

_ISO_RE = re.compile(
    r"""^\s*
    (?P<date>\d{4}-\d{2}-\d{2})
    (?:
        (?:[Tt ]?)                      # Apigee's sample "2018-10-0917:04:48Z" has no separator
        (?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d{1,9}))?)?
        \s*(?P<tz>[Zz]|[+-]\d{2}:?\d{2}|UTC)?
    )?\s*$""",
    re.VERBOSE,
)

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: Instant) -> datetime:
    """Any instant (aware or naive datetime, epoch seconds) as aware UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def to_epoch(value: Instant) -> float:
    return as_utc(value).timestamp()


def parse_iso8601(text: str) -> datetime:
    """Parse ISO 8601 as the vendors write it; raise ValueError naming the text.

    Accepts a bare date, a missing 'T' (also with no separator at all), 'Z',
    '+hh:mm' / '+hhmm' offsets and up to nanosecond fractions (truncated to µs).
    """
    match = _ISO_RE.match(text or "")
    if not match:
        raise ValueError(f"not an ISO 8601 date or date-time: {text!r}")
    day = date.fromisoformat(match["date"])
    if match["h"] is None:
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    micro = int((match["frac"] or "0")[:6].ljust(6, "0"))
    tz = match["tz"]
    if tz in (None, "Z", "z", "UTC"):
        offset = UTC
    else:
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    parsed = datetime(
        day.year,
        day.month,
        day.day,
        int(match["h"]),
        int(match["m"]),
        int(match["s"] or 0),
        micro,
        tzinfo=offset,
    )
    return parsed.astimezone(UTC)


def iso_z(value: Instant) -> str:
    """Canonical event timestamp: microseconds, 'Z'. props.conf TIME_FORMAT matches it."""
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_ser(value: Instant) -> str:
    """Proofpoint SER: yyyy-MM-dd'T'HH:mm:ss.SSS'Z'."""
    moment = as_utc(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_google(value: Instant) -> str:
    """Google Email Audit API: 'YYYY-MM-DD HH:MM' in UTC."""
    return as_utc(value).strftime("%Y-%m-%d %H:%M")


def parse_google(text: str) -> datetime:
    """A Google date, documented as 'YYYY-MM-DD HH:MM' (UTC) but read leniently:
    with seconds and fractions, an ISO 8601 'T', a 'Z' or an offset, or a bare date.
    Raise ValueError naming the text for anything else."""
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    except (ValueError, AttributeError):
        pass
    try:
        return parse_iso8601(text)
    except (ValueError, TypeError):
        raise ValueError(f"not a 'YYYY-MM-DD HH:MM' date: {text!r}") from None


def parse_duration(text: str) -> timedelta:
    """'90s', '5m', '1h', '1d', '2w' as a timedelta; raise ValueError otherwise."""
    match = _DURATION_RE.match(text or "")
    if not match or int(match[1]) <= 0:
        raise ValueError(f"not a duration such as 5m, 1h or 1d: {text!r}")
    return timedelta(seconds=int(match[1]) * _DURATION_UNITS[match[2]])


def align_down(epoch: float, step_seconds: int) -> int:
    """The start (epoch seconds) of the step-sized slot holding `epoch`, slots counted
    from the epoch: a 1d step is a UTC day."""
    seconds = int(epoch // 1)
    return seconds - seconds % step_seconds
