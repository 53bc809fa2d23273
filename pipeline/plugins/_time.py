"""Fast conversion of access-log timestamps, cached per distinct second."""

from __future__ import annotations

from datetime import UTC, datetime

_MONTHS = {m: f"{i:02d}" for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_cache: dict[str, str] = {}


def clf_to_iso(stamp: str) -> str:
    """``10/Oct/2000:13:55:36 -0700`` -> ``2000-10-10T13:55:36-07:00``; ValueError if not one."""
    iso = _cache.get(stamp)
    if iso is not None:
        return iso
    try:
        day, month, rest = stamp[0:2], _MONTHS[stamp[3:6]], stamp[7:]
        year, clock, zone = rest[0:4], rest[5:13], rest[14:]
        if not (day.isdigit() and year.isdigit() and rest[4] == ":" and len(zone) == 5
                and zone[0] in "+-" and zone[1:].isdigit() and clock[2] == ":" == clock[5]):
            raise ValueError
    except (KeyError, IndexError, ValueError):
        raise ValueError(f"not a log timestamp: {stamp!r}") from None
    iso = f"{year}-{month}-{day}T{clock}{zone[:3]}:{zone[3:]}"
    if len(_cache) > 4096:
        _cache.clear()
    _cache[stamp] = iso
    return iso


def iso_to_utc(iso: str) -> str:
    """An ISO 8601 time with offset -> UTC ``YYYY-MM-DDTHH:MM:SSZ`` (the OpenURL url_tim form)."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
