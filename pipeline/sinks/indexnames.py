"""Which index a record goes to: the index pattern's strftime codes filled from the record's
own time, within a window of accepted ages (a hostile time cannot make indices up to the
cluster's shard limit). Names are cached per time, and per day for a pattern of dates alone.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

_names: dict[tuple[str, str], str] = {}  # (pattern, time) -> index name
_days: dict[tuple[str, str], str] = {}  # (pattern naming at most the day, local date) -> index name
_bounds: list[Any] = [-1.0, None, None, None]  # until (monotonic), (age, ahead), oldest, newest
#: strftime codes that depend on the date alone (a pattern of these is filled once per day)
_DATE_ONLY = re.compile(r"(?:[^%]|%[YmdyjGVuwaAbBUWC%])*")


def index_name(pattern: str, record: dict[str, Any], time_field: str, max_age_days: int = 400,
               max_ahead_days: int = 2) -> str:
    """``pattern`` with strftime codes filled from the record's own time (cached per time). A
    time further back than ``max_age_days`` or ahead than ``max_ahead_days`` fills none: such a
    record goes to one fixed index (``access-out-of-range`` for ``access-%Y.%m.%d``), so that
    hostile times cannot make indices up to the cluster's shard limit."""
    if "%" not in pattern:
        return pattern
    value = record.get(time_field)
    if isinstance(value, str):
        name = _names.get((pattern, value))
        if name is not None:
            return name
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return datetime.now(UTC).strftime(pattern)
        oldest, newest = _window(max_age_days, max_ahead_days)
        # as Unix times: comparing datetimes of two zones costs twice as much
        if not oldest <= (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp() <= newest:
            name = out_of_range_index(pattern)
        elif value[4:5] == "-" == value[7:8] and value[10:11] in ("T", " ") and _date_only(pattern):
            name = _days.get((pattern, value[:10])) or _day_name(pattern, value[:10], when)
        else:
            name = when.strftime(pattern)
        if len(_names) > 65536:
            _names.clear()
        _names[(pattern, value)] = name
        return name
    return datetime.now(UTC).strftime(pattern)


def _window(max_age_days: int, max_ahead_days: int) -> tuple[float, float]:
    """The Unix times a record may have to be in a dated index, worked out again each second."""
    until, days, oldest, newest = _bounds
    if time.monotonic() >= until or days != (max_age_days, max_ahead_days):
        now = datetime.now(UTC)
        oldest = (now - timedelta(days=max_age_days)).timestamp()
        newest = (now + timedelta(days=max_ahead_days)).timestamp()
        _bounds[:] = [time.monotonic() + 1.0, (max_age_days, max_ahead_days), oldest, newest]
    return oldest, newest


@functools.cache
def _date_only(pattern: str) -> bool:
    return _DATE_ONLY.fullmatch(pattern) is not None


def _day_name(pattern: str, day: str, when: datetime) -> str:
    if len(_days) > 4096:
        _days.clear()
    name = _days[pattern, day] = when.strftime(pattern)
    return name


def out_of_range_index(pattern: str) -> str:
    """``access-%Y.%m.%d`` -> ``access-out-of-range``."""
    head = re.sub(r"[-_.]*(%[a-zA-Z][-_.]*)+$", "", pattern)
    return re.sub(r"%[a-zA-Z]", "", head).rstrip("-_.") + "-out-of-range"
