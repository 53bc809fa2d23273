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

Every record has ``robot``; the other keys are on the records COUNTER may count (an item page
or a download, status 200 or 304, not a robot), and on no other: a static file, a search or a
robot's request is never in a report, and leaving the keys off saves two hashes a line.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

AGENT_CHARS = 400
_SHORT = AGENT_CHARS + 17  # what _bounded leaves as it is
_sha1 = hashlib.sha1
SLOT_SECONDS = 60
_times: dict[str, tuple[str, str, int]] = {}
_hours: dict[str, int] = {}  # local hour and zone -> the Unix time it starts
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
    if len(text) <= _SHORT:
        return text
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[:AGENT_CHARS]}#{digest}"


def utc_parts(iso: str) -> tuple[str, str, int]:
    """``2024-06-15T15:35:00+02:00`` -> (``2024-06-15``, ``13``, Unix seconds), cached per time;
    for the shape every access-log time has, the start of its hour is kept too, so that a new
    second costs two small integers and no date arithmetic."""
    parts = _times.get(iso)
    if parts is None:
        if len(iso) == 25 and iso[19] in "+-" and iso[13] == ":" == iso[16] and iso[14:16].isdigit() \
                and iso[17:19].isdigit():
            hour_key = iso[:13] + iso[19:]
            start = _hours.get(hour_key)
            if start is None:
                start = _hours[hour_key] = _parts(iso[:13] + ":00:00" + iso[19:])[2]
            parts = of_epoch(start + int(iso[14:16]) * 60 + int(iso[17:19]))
        else:
            parts = _parts(iso)
        if len(_times) > 4096:
            _times.clear()
            _hours.clear()
        _times[iso] = parts
    return parts


def _parts(iso: str) -> tuple[str, str, int]:
    when = datetime.fromisoformat(iso)
    return of_epoch(int((when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()))


def of_epoch(epoch: int) -> tuple[str, str, int]:
    """The UTC date and hour of a Unix time (a zone of +05:30 moves the hour at :30 local)."""
    day, second = divmod(epoch, 86400)
    text = _days.get(day)
    if text is None:
        text = _days[day] = (_EPOCH + timedelta(days=day)).isoformat()
    return text, _HOURS[second // 3600], epoch


def click_key(key: str, url: str) -> str:
    return hashlib.sha1(f"{key}\x00{url}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


def slots(click: str, epoch: int) -> list[str]:
    """The two slots of a click at ``epoch``: clicks 30 s apart or less share one of them."""
    return [f"{click}.a{epoch // SLOT_SECONDS}", f"{click}.b{(epoch + SLOT_SECONDS // 2) // SLOT_SECONDS}"]


#: the records COUNTER may count (§7.1: successful or not-modified requests of items and their
#: files); only these get the keys (a robot's never: it is not counted)
COUNTED_KINDS = frozenset({"download", "item"})
COUNTED_STATUS = frozenset({200, 304})


def keys(client_ip: str, user: str, session_id: str, agent: str, url: str, day: str, hour: str,
         epoch: int) -> tuple[str, str, str, str, list[str]]:
    """``user_key``, ``session``, ``session_hash``, ``click`` and ``click_slots`` of a record
    COUNTER may count, at ``epoch`` (its UTC ``day`` and ``hour``: :func:`utc_parts`). The
    functions above say what each key is; this is them inlined, as it runs for every other line."""
    if user and user != "-":
        key = "user:" + (user if len(user) <= _SHORT else _bounded(user))
    elif session_id and session_id != "-":
        key = "session:" + (session_id if len(session_id) <= _SHORT else _bounded(session_id))
    else:
        key = f"{client_ip}|{agent if len(agent) <= _SHORT else _bounded(agent)}"
    if session_id and session_id != "-":
        session = f"session:{session_id if len(session_id) <= _SHORT else _bounded(session_id)}|{day}"
    else:
        session = f"{key}|{day}|{hour}"
    click = _sha1(f"{key}\x00{url}".encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return (key, session, _sha1(session.encode("utf-8", "surrogatepass")).hexdigest()[:16], click,
            [f"{click}.a{epoch // SLOT_SECONDS}", f"{click}.b{(epoch + SLOT_SECONDS // 2) // SLOT_SECONDS}"])
