"""Parsing durations ("15m", "7d") and points in time ("7d" ago, "2025-07-01") from users."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tasks.errors import InvalidInput

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """A duration such as "90s", "15m", "24h", "7d" or "2w" (a bare number is seconds)."""
    stripped = text.strip()
    if stripped.isdigit():
        return timedelta(seconds=int(stripped))
    match = _DURATION.match(stripped)
    if not match:
        raise InvalidInput(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 7d)")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0 or value > 10 * 365 * 86400:
        raise InvalidInput(f"duration out of range: {text!r}")
    return timedelta(seconds=value)


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time: a duration back from now ("7d") or an ISO date/datetime (UTC if naive)."""
    now = now or datetime.now(UTC)
    if _DURATION.match(text.strip()):
        return now - parse_duration(text)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"not a date or duration: {text!r} "
            "(use e.g. 7d, 24h, 90m, 2025-07-01 or 2025-07-01T12:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
