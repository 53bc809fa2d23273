"""What to select, read once from request parameters (or command-line options) into a frozen
:class:`Selection`; a bad value is a :class:`ParamError` naming the parameter.

``range``: ``TODAY`` (since midnight, UTC), ``1D``, ``7D``, ``30D`` (the last N days; also
``12H``); or ``from`` / ``to``: ``2026-01-15T10:00:00Z`` (an offset or ``Z``; without one, UTC),
a day ``2026-01-15``, a month ``2026-01``, ``now`` or ``now-7d`` (``m``, ``h``, ``d``). ``from``
is included, ``to`` is not, except that a day or month given as ``to`` is included whole.
Without either the range starts ``max_range_days`` before ``to`` (default: now); a longer range
is refused. ``q``: free text (Elasticsearch's simple query string, which never fails on its
syntax). Any other parameter names a field: ``kind=download``, ``status=200|304`` (any of),
``status=400..499`` or ``bytes=1000..`` (a range, ends included).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.errors import LoglinesError

FIELD = re.compile(r"^[A-Za-z_@][A-Za-z0-9_.@-]{0,99}$")
_RELATIVE = re.compile(r"^now(?:-(\d{1,6})([mhd]))?$")
_LAST = re.compile(r"^(\d{1,5})([DH])$", re.IGNORECASE)
_UNITS = {"m": 60, "h": 3600, "d": 86400}
_RANGE = re.compile(r"^([0-9][0-9:.TZ+-]*)?\.\.([0-9][0-9:.TZ+-]*)?$")  # 400..499, 1000.., ..2026-02
#: parameters every selection takes; an endpoint adds its own (size, format, ...)
SELECTION = frozenset({"range", "from", "to", "q", "counted"})
#: what ``q`` may use: words, phrases, and/or/not, prefixes; no fuzzy or proximity queries,
#: which can cost the cluster far more than they look
TEXT_FLAGS = "AND|OR|NOT|PHRASE|PRECEDENCE|ESCAPE|WHITESPACE|PREFIX"
#: what COUNTER counts at all (before double clicks): §7.1 statuses, downloads and item pages,
#: no robot (the keys of pipeline/plugins/_counter.py)
COUNTED: tuple[dict[str, Any], ...] = ({"terms": {"status": [200, 304]}}, {"terms": {"kind": ["download", "item"]}},
           {"term": {"robot": False}})


class ParamError(LoglinesError):
    """A request parameter (or command-line option) that cannot be used: its name and why."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param, self.reason = param, message


@dataclass(frozen=True)
class Selection:
    start: datetime  # included, UTC
    end: datetime  # excluded, UTC
    terms: tuple[tuple[str, tuple[str, ...]], ...] = ()  # field, any of these values
    ranges: tuple[tuple[str, str, str], ...] = ()  # field, lowest, highest ("" = open)
    text: str = ""
    counted: bool = False  # only what COUNTER counts (statuses, kinds, robots)
    ids: tuple[str, ...] = ()  # these documents only

    def query(self, time_field: str) -> dict[str, Any]:
        clauses: list[dict[str, Any]] = [{"range": {time_field: {
            "gte": iso(self.start), "lt": iso(self.end), "format": "strict_date_optional_time"}}}]
        for name, values in self.terms:
            clauses.append({"terms": {name: list(values)}} if len(values) > 1 else {"term": {name: values[0]}})
        for name, low, high in self.ranges:
            bounds = {k: v for k, v in (("gte", low), ("lte", high)) if v}
            clauses.append({"range": {name: bounds}})
        if self.text:
            clauses.append({"simple_query_string": {"query": self.text, "default_operator": "and",
                                                    "flags": TEXT_FLAGS}})
        if self.counted:
            clauses.extend(COUNTED)
        if self.ids:
            clauses.append({"ids": {"values": list(self.ids)}})
        return {"bool": {"filter": clauses}}

    def describe(self) -> dict[str, Any]:
        """What was selected, for answers and the audit record."""
        out: dict[str, Any] = {"from": iso(self.start), "to": iso(self.end)}
        out.update({name: "|".join(values) for name, values in self.terms})
        out.update({name: f"{low}..{high}" for name, low, high in self.ranges})
        if self.text:
            out["q"] = self.text
        if self.counted:
            out["counted"] = "yes"
        if self.ids:
            out["id"] = "|".join(self.ids)
        return out

    @property
    def narrowed(self) -> bool:
        """Whether anything besides the time range selects."""
        return bool(self.terms or self.ranges or self.text or self.counted or self.ids)


def sorting(text: str, time_field: str) -> list[tuple[str, str]]:
    """``-time,status`` -> [(time, desc), (status, asc)]; default: the time, oldest first."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, order = (part[1:], "desc") if part.startswith("-") else (part.lstrip("+"), "asc")
        if not FIELD.match(name):
            raise ParamError("sort", f"{part[:100]!r}: expected a field name, - before it for descending")
        out.append((name, order))
    if len(out) > 5:
        raise ParamError("sort", "at most 5 fields")
    return out or [(time_field, "asc")]


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(param: str, text: str, is_end: bool = False, now: datetime | None = None) -> datetime:
    value = text.strip()
    now = now or datetime.now(UTC)
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = relative.groups()
        return now - timedelta(seconds=int(amount or 0) * _UNITS.get(unit or "m", 60))
    try:
        if re.fullmatch(r"\d{4}-\d{2}", value):
            start = datetime.strptime(value, "%Y-%m").replace(tzinfo=UTC)
            return next_month(start) if is_end else start
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            start = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
            return start + timedelta(days=1) if is_end else start
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ParamError(param, f"{text[:40]!r} is not a time: use 2026-01-15T10:00:00Z, 2026-01-15, "
                                "2026-01, now or now-7d") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def last(text: str, now: datetime) -> tuple[datetime, datetime]:
    """``TODAY``, ``7D``, ``12H`` -> (start, now)."""
    value = text.strip()
    if value.upper() == "TODAY":
        return now.replace(hour=0, minute=0, second=0, microsecond=0), now
    match = _LAST.match(value)
    if match is None or int(match.group(1)) == 0:
        raise ParamError("range", f"{value[:20]!r}: expected TODAY, 1D, 7D, 10D, 30D (N days) or 12H (N hours)")
    hours = int(match.group(1)) * (24 if match.group(2).upper() == "D" else 1)
    return now - timedelta(hours=hours), now


def next_month(when: datetime) -> datetime:
    return when.replace(year=when.year + when.month // 12, month=when.month % 12 + 1, day=1)


ALL_TIME = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


def selection(params: Mapping[str, Sequence[str]], allowed: Collection[str], max_range_days: int | None,
              known_fields: Collection[str] | None = None, now: datetime | None = None) -> Selection:
    """A :class:`Selection` from ``params``; names in ``allowed`` (besides :data:`SELECTION`) are
    the endpoint's own and left alone; any other name is a field filter, checked against
    ``known_fields`` when given. With ``max_range_days`` None (deletes) the range is not
    bounded, and without range, from or to it is all time."""
    now = now or datetime.now(UTC)

    def one(name: str) -> str:
        values = params.get(name) or [""]
        if len(values) > 1:
            raise ParamError(name, "given more than once")
        return values[0]

    if one("range"):
        if one("from") or one("to"):
            raise ParamError("range", "give range or from/to, not both")
        start, end = last(one("range"), now)
    elif max_range_days is None and not one("from") and not one("to"):
        start, end = ALL_TIME
    elif max_range_days is None:
        start = parse_time("from", one("from"), False, now) if one("from") else ALL_TIME[0]
        end = parse_time("to", one("to"), True, now) if one("to") else ALL_TIME[1]
    else:
        end = parse_time("to", one("to"), True, now) if one("to") else now
        start = parse_time("from", one("from"), False, now) if one("from") else end - timedelta(days=max_range_days)
    if start >= end:
        raise ParamError("from", f"{iso(start)} is not before to ({iso(end)})")
    if max_range_days is not None and end - start > timedelta(days=max_range_days, seconds=1):
        raise ParamError("from", f"the range {iso(start)} .. {iso(end)} is longer than {max_range_days} "
                                 "days (max_range_days)")
    text = one("q")
    if len(text) > 1000:
        raise ParamError("q", "longer than 1,000 characters")
    counted = one("counted").lower() in ("1", "yes", "true", "on")
    terms: list[tuple[str, tuple[str, ...]]] = []
    ranges: list[tuple[str, str, str]] = []
    for name, values in params.items():
        if name in SELECTION or name in allowed:
            continue
        if not FIELD.match(name):
            raise ParamError(name[:100], "not a parameter of this endpoint nor a field name")
        if known_fields is not None and name not in known_fields:
            raise ParamError(name, "not a parameter of this endpoint nor a field of the indices")
        for value in values:
            if not value or len(value) > 2048:
                raise ParamError(name, "give a value (1 to 2,048 characters)")
            bounds = _RANGE.match(value)
            if bounds and value != "..":
                ranges.append((name, bounds.group(1) or "", bounds.group(2) or ""))
            else:
                terms.append((name, tuple(value.split("|"))))
    return Selection(start, end, tuple(terms), tuple(ranges), text, counted)
