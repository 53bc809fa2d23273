"""The COUNTER keys an access-log record carries, so that reports can be exact without state.

Each key depends on the line alone, so any number of parser processes, in any order and across
any batch boundary, give every line the same keys:

``user_key``
    who COUNTER takes the user to be (Code of Practice 5.1, §7.2, the most reliable first): the
    logged-in user name when the line has one (``user:<name>``), else the session id when the log
    carries one (``session:<id>``, the access-log plugin's ``opt_trailing = session``), else IP
    address and user agent (``<ip>|<agent>``). An agent (or name, or id) over 400 characters
    keeps its first 400 and a hash of the whole, so keys stay short and two never share one.
``session``
    §7.3's user-session: a logged session id and the date (``session:<id>|<date>``), else the
    user key, the date and the hour, in UTC: ``192.1.1.168|Mozilla/5.0|2024-06-15|13``.
``session_hash``
    the first 16 hex digits of its SHA-1: what reports aggregate on (a short key is about half
    the work for Elasticsearch and the client of a long one with a user agent in it).
``click``
    a hash of user and URL: the §7.2 double-click key.
``click_slots``
    two 60-second slots of that key, 30 seconds apart (``<click>.a<minute>`` and
    ``<click>.b<minute>``). Two clicks of one key at most 30 s apart always share a slot (the one
    whose edge does not fall between them), so a report finds every possible double click among
    the slots holding two records or more, and applies the rule exactly to those alone
    (:mod:`pipeline.query.doubleclick`); whether a click is the first of a pair depends on the
    next click, which no parser can know when it reads the line.
``robot``
    the user agent is on the COUNTER robots list (:mod:`pipeline.transforms.robots`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pipeline.transforms.robots import counter_robots

AGENT_CHARS = 400
SLOT_SECONDS = 60
_times: dict[str, tuple[str, str, int]] = {}
_days: dict[int, str] = {}
_EPOCH = date(1970, 1, 1)
_HOURS = tuple(f"{h:02d}" for h in range(24))


def user_key(client_ip: str, user_agent: str, user: str = "-", session_id: str = "") -> str:
    if user and user != "-":
        return f"user:{_bounded(user)}"
    if session_id and session_id != "-":
        return f"session:{_bounded(session_id)}"
    return f"{client_ip}|{_bounded(user_agent)}"


def session_key(key: str, date: str, hour: str, session_id: str = "") -> str:
    if session_id and session_id != "-":
        return f"session:{_bounded(session_id)}|{date}"
    return f"{key}|{date}|{hour}"


def _bounded(text: str) -> str:
    if len(text) <= AGENT_CHARS + 17:
        return text
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[:AGENT_CHARS]}#{digest}"


def utc_parts(iso: str) -> tuple[str, str, int]:
    """``2024-06-15T15:35:00+02:00`` -> (``2024-06-15``, ``13``, Unix seconds), cached per time."""
    parts = _times.get(iso)
    if parts is None:
        when = datetime.fromisoformat(iso)
        epoch = int((when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp())
        day, second = divmod(epoch, 86400)
        text = _days.get(day)
        if text is None:
            text = _days[day] = (_EPOCH + timedelta(days=day)).isoformat()
        parts = (text, _HOURS[second // 3600], epoch)
        if len(_times) > 4096:
            _times.clear()
        _times[iso] = parts
    return parts


def click_key(key: str, url: str) -> str:
    return hashlib.sha1(f"{key}\x00{url}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


def slots(click: str, epoch: int) -> list[str]:
    """The two slots of a click at ``epoch``: clicks 30 s apart or less share one of them."""
    return [f"{click}.a{epoch // SLOT_SECONDS}", f"{click}.b{(epoch + SLOT_SECONDS // 2) // SLOT_SECONDS}"]


def enrich(record: dict[str, Any]) -> dict[str, Any]:
    """Add the keys above to a parsed access-log record (which it returns)."""
    agent, session_id = record["user_agent"], record.get("session_id", "")
    key = user_key(record["client_ip"], agent, record["user"], session_id)
    date, hour, epoch = utc_parts(record["time"])
    click = click_key(key, record["url"])
    record["user_key"] = key
    session = session_key(key, date, hour, session_id)
    record["session"] = session
    record["session_hash"] = hashlib.sha1(session.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    record["click"] = click
    record["click_slots"] = slots(click, epoch)
    record["robot"] = counter_robots().is_robot(agent)
    return record
