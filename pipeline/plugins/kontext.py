"""KonText application records (the corpus query tool's usage log).

Accepts the bare JSON record the application pushes onto a Redis list, and the log-line form
``2017-01-31 19:19:22,930 [QUERY] INFO: {json}``. The record's ``date`` (local time of the
application) becomes ISO 8601 with the configured zone; the client IP comes from
X-Forwarded-For, then REMOTE_ADDR; bots and monitors (COUNTER robots list plus configured
patterns) are dropped (returned as not wanted, so they go to ``other_queue``).

Options: ``timezone`` (IANA name, default UTC), ``bots`` (extra regular expressions,
``|``-separated), ``keep_bots`` (yes: mark bots with ``is_bot`` instead of dropping them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from pipeline.transforms.robots import RobotFilter, load_patterns

OPTIONS = {
    "timezone": "IANA zone of the application's timestamps (default UTC)",
    "bots": "extra user-agent patterns, '|'-separated",
    "keep_bots": "yes: keep bot records, marked is_bot, instead of dropping them",
}
#: What the plugin adds to the application's record (whose own fields pass through: "*").
FIELDS: dict[str, set[str] | None] = {
    "time": None, "ip": None, "user_agent": None, "is_bot": {"True", "False"}, "id": None, "*": None,
}
MARK = "[QUERY] INFO: "
ID_FIELDS = ("date", "user_id", "action", "proc_time", "ip")


def make_parser(options: Mapping[str, str]) -> Any:
    convert = _converter(options)

    def parse(item: dict[str, Any]) -> dict[str, Any] | None:
        record = _record(item)
        return convert(record if record is not item else dict(item))

    return parse


def make_batch_parser(options: Mapping[str, str]) -> Any:
    convert = _converter(options)

    def parse_batch(lines: list[str]) -> list[Any]:
        out: list[Any] = []
        append = out.append
        for line in lines:
            try:
                _, mark, payload = line.partition(MARK)
                if not mark:
                    raise ValueError("not a KonText record: no '[QUERY] INFO: ' marker")
                record = orjson.loads(payload)
                if not isinstance(record, dict):
                    raise ValueError("not a KonText record: the JSON is not an object")
                append(convert(record))
            except Exception as exc:  # that line alone is dead-lettered with it
                append(exc)
        return out

    return parse_batch


def _converter(options: Mapping[str, str]) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """What becomes of the application's record (which it changes: pass a copy of one you keep)."""
    try:
        zone = ZoneInfo(options.get("timezone", "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {options.get('timezone')!r}") from None
    extra = [p for p in options.get("bots", "").split("|") if p.strip()]
    robots = RobotFilter(load_patterns() + extra)
    keep_bots = options.get("keep_bots", "no").lower() in ("1", "yes", "true", "on")
    to_iso, sha1, dumps, sort_keys = _times(zone), hashlib.sha1, orjson.dumps, orjson.OPT_SORT_KEYS

    def convert(record: dict[str, Any]) -> dict[str, Any] | None:
        request = record.pop("request", None) or {}
        agent = str(request.get("HTTP_USER_AGENT") or "")
        is_bot = robots.is_robot(agent)
        if is_bot and not keep_bots:
            return None
        record["time"] = to_iso(str(record.get("date", "")))
        record["ip"] = _client_ip(request)
        record["user_agent"] = agent
        record["is_bot"] = is_bot
        params = dumps(record.get("params"), option=sort_keys).decode()
        record["id"] = sha1(dumps([record.get(k) for k in ID_FIELDS] + [params])).hexdigest()
        return record

    return convert


def _times(zone: ZoneInfo) -> Callable[[str], str]:
    """``_iso`` for one zone, remembering the zone's offset per minute of local time (the
    offset changes only at whole minutes), for dates of the application's usual shape."""
    offsets: dict[str, str] = {}

    def to_iso(date: str) -> str:
        if len(date) == 26 and date[10] in " T" and date[19] == "." and date[20:] != "000000":
            offset = offsets.get(date[:16])
            if offset is None:
                iso = _iso(date, zone)
                if iso[19] != "." or len(offsets) > 4096:
                    offsets.clear()
                    return iso
                offset = offsets[date[:16]] = iso[26:]
            else:
                datetime.fromisoformat(date)  # still checked
            return f"{date[:10]}T{date[11:]}{offset}"
        return _iso(date, zone)

    return to_iso


def _record(item: dict[str, Any]) -> dict[str, Any]:
    line = item.get("logline")
    if line is None:
        return item  # the bare record pushed by the application
    _, mark, payload = str(line).partition(MARK)
    if not mark:
        raise ValueError("not a KonText record: no '[QUERY] INFO: ' marker")
    record = orjson.loads(payload)
    if not isinstance(record, dict):
        raise ValueError("not a KonText record: the JSON is not an object")
    return record


def _iso(date: str, zone: ZoneInfo) -> str:
    try:
        stamp = datetime.fromisoformat(date)
    except ValueError:
        raise ValueError(f"not a KonText date: {date!r}") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=zone)
    return stamp.isoformat()


def _client_ip(request: Mapping[str, Any]) -> str:
    forwarded = str(request.get("HTTP_X_FORWARDED_FOR") or "")
    if forwarded:
        return forwarded.split(",", 1)[0].strip()
    return str(request.get("REMOTE_ADDR") or "")
