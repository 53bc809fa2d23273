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
from collections.abc import Mapping
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
    try:
        zone = ZoneInfo(options.get("timezone", "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {options.get('timezone')!r}") from None
    extra = [p for p in options.get("bots", "").split("|") if p.strip()]
    robots = RobotFilter(load_patterns() + extra)
    keep_bots = options.get("keep_bots", "no").lower() in ("1", "yes", "true", "on")

    def parse(item: dict[str, Any]) -> dict[str, Any] | None:
        record = _record(item)
        request = record.get("request") or {}
        agent = str(request.get("HTTP_USER_AGENT") or "")
        is_bot = robots.is_robot(agent)
        if is_bot and not keep_bots:
            return None
        out = {k: v for k, v in record.items() if k != "request"}
        out["time"] = _iso(str(record.get("date", "")), zone)
        out["ip"] = _client_ip(request)
        out["user_agent"] = agent
        out["is_bot"] = is_bot
        out["id"] = hashlib.sha1(
            orjson.dumps([out.get(k) for k in ID_FIELDS] + [orjson.dumps(record.get("params"),
                         option=orjson.OPT_SORT_KEYS).decode()])
        ).hexdigest()
        return out

    return parse


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
