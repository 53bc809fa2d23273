"""Apache/Nginx access logs: combined and common log format.

An optional trailing quoted field (such as ``"%{X-Forwarded-For}i"``) is read as the
forwarded-for chain. Repository requests are recognised: DSpace (XMLUI, JSPUI, 7.x REST and UI)
and EPrints file downloads (``kind = download``), item pages (``item``) and thumbnails
(``thumbnail``); everything else is ``other``.

Every record also carries the keys COUNTER reports count with (``user_key``, ``session``,
``session_hash``, ``click``, ``click_slots``, ``robot``: see :mod:`pipeline.plugins._counter`).

Options (``opt_<name>`` in the parser's section):
  use_xff — yes: the client IP is the first address of X-Forwarded-For when present.
  trailing — what the optional quoted field after the user agent holds: ``xff`` (the
  X-Forwarded-For chain, the default) or ``session`` (a session id, such as Apache's
  ``"%{JSESSIONID}C"``: then COUNTER sessions and double clicks follow it, ``session_id``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.plugins import _counter
from pipeline.plugins._time import clf_to_iso
from pipeline.transforms.robots import counter_robots

OPTIONS = {"use_xff": "take the client IP from X-Forwarded-For when present (yes/no)",
           "trailing": "the optional quoted field after the user agent: xff (default) or session (a session id)"}
#: The fields of records, with the values of those that take only a few (what a parser's
#: ``accept`` is checked against); ``session_id`` only with ``opt_trailing = session``.
FIELDS: dict[str, set[str] | None] = {
    "client_ip": None, "remote_host": None, "ident": None, "user": None, "time": None,
    "method": None, "url": None, "protocol": None, "status": None, "bytes": None,
    "referrer": None, "user_agent": None, "xff": None,
    "kind": {"download", "item", "thumbnail", "other"},
    "repository": {"dspace", "eprints", ""},
    "item_id": None,
    "user_key": None, "session": None, "session_hash": None, "click": None, "click_slots": None,
    "robot": {"True", "False"}, "session_id": None,
}

_QUOTED = r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"'  # a quoted field, backslash escapes allowed (no backtracking)


def _line(quoted: str) -> re.Pattern[str]:
    return re.compile(
        r"(\S++) (\S++) (\S++) \[([^\]]{1,40}+)\] " + quoted + r" (\d{3}|-) (\d+|-)"
        r"(?: " + quoted + " " + quoted + r")?(?: " + quoted + r")?"
    )


LINE = _line(_QUOTED)
# Without a backslash in the line both patterns read it the same way; this one is twice as fast.
_PLAIN_LINE = _line(r'"([^"]*+)"')
_HANDLE = r"(\d+(?:\.\d+)*/\d+)"
_UUID = r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
# A context path such as /xmlui or /jspui, tried after none: a path without one (the common
# case) then matches at once, and no path matches both ways (the route's literal follows).
_CTX = r"(?:/[A-Za-z]+)??"
# Each route has two groups: the item id, and the file name (empty where there is none).
ROUTES: tuple[tuple[str, str, str], ...] = (
    (_CTX + r"/bitstream/handle/" + _HANDLE + r"/([^/?]+)", "download", "dspace"),
    (_CTX + r"/bitstream/" + _HANDLE + r"/\d+/([^/?]+)", "download", "dspace"),
    (r"/server/api/core/bitstreams/" + _UUID + r"/content()", "download", "dspace"),
    (r"/bitstreams/" + _UUID + r"/download()", "download", "dspace"),
    (_CTX + r"/handle/" + _HANDLE + r"/?()$", "item", "dspace"),
    (r"/(?:items|entities/[a-z]+)/" + _UUID + r"/?()$", "item", "dspace"),
    (r"/(?:id/eprint/)?(\d+)/\d+\.has\w*ThumbnailVersion/([^/?]+)", "thumbnail", "eprints"),
    (r"/(?:id/eprint/)?(\d+)/\d+/([^/?]+)$", "download", "eprints"),
    (r"/(?:id/eprint/)?(\d+)/?()$", "item", "eprints"),
)


def _routes(first: int, end: int) -> tuple[int, re.Pattern[str]]:
    return first, re.compile("|".join(f"(?:{pattern})" for pattern, _, _ in ROUTES[first:end]))


# The routes in order, in groups that each need a literal to be present: a path is tried only
# against the groups it can match, and the first route that matches wins, as in one alternation.
_BITSTREAM, _HANDLE_PAGE, _ENTITY, _EPRINTS = _routes(0, 4), _routes(4, 5), _routes(5, 6), _routes(6, 9)
_IMAGES = frozenset((".jpg", ".png"))  # what a thumbnail's name ends with (_THUMB, cheaper)
_THUMB = re.compile(r"\.[A-Za-z0-9]{2,5}\.(?:jpg|png)$", re.IGNORECASE)


def _options(options: Mapping[str, str]) -> tuple[bool, bool]:
    use_xff = options.get("use_xff", "no").strip().lower() in ("1", "yes", "true", "on")
    trailing = options.get("trailing", "xff").strip().lower()
    if trailing not in ("xff", "session"):
        raise ValueError(f"opt_trailing = {trailing!r}: expected xff or session")
    return use_xff, trailing == "session"


def make_parser(options: Mapping[str, str]) -> Any:
    read = _READERS[_options(options)]

    def parse(item: dict[str, Any]) -> dict[str, Any] | None:
        return read(item["logline"], counter_robots().is_robot)

    return parse


def make_batch_parser(options: Mapping[str, str]) -> Any:
    return _batch(_READERS[_options(options)])


def parse(item: dict[str, Any]) -> dict[str, Any] | None:
    return parse_line(item["logline"], False)


def parseline(jmsg: str) -> dict[str, Any] | None:
    """The original contract: ``jmsg`` is the JSON text of the item."""
    import orjson

    return parse_line(orjson.loads(jmsg)["logline"], False)


def parse_line(line: str, use_xff: bool = False, trailing_session: bool = False) -> dict[str, Any]:
    """The record of one line; ValueError when it is not an access-log line."""
    return _READERS[use_xff, trailing_session](line, counter_robots().is_robot)


Reader = Callable[[str, Callable[[str], bool]], dict[str, Any]]
#: access-log time -> (ISO 8601 time, UTC date, UTC hour, Unix time), for the distinct seconds
_STAMPS: dict[str, tuple[str, str, str, int]] = {}
#: access-log minute and zone (``01/Jan/2026:00:00 +0100``) -> (``2026-01-01T00:00:``, ``+01:00``,
#: its UTC date and hour, its Unix time): a zone is whole minutes, so its seconds share them
_MINUTES: dict[str, tuple[str, str, str, str, int]] = {}


def _stamp(stamp: str) -> tuple[str, str, str, int]:
    """What :data:`_STAMPS` keeps of a time: ``clf_to_iso`` and ``utc_parts`` of it, for the
    common shape from what was worked out for its minute (a new second is then a few slices)."""
    second = stamp[18:20]
    if len(stamp) == 26 and stamp[17] == ":" and stamp[20] == " " and second.isdigit() and second < "60":
        minute = stamp[:17] + stamp[20:]
        base = _MINUTES.get(minute)
        if base is None:
            start = clf_to_iso(stamp[:17] + ":00" + stamp[20:])
            if len(_MINUTES) > 4096:
                _MINUTES.clear()
            base = _MINUTES[minute] = (start[:17], start[19:], *_counter.utc_parts(start))
        prefix, zone, day, hour, epoch = base
        parts = (prefix + second + zone, day, hour, epoch + int(second))
    else:
        iso = clf_to_iso(stamp)
        parts = (iso, *_counter.utc_parts(iso))
    if len(_STAMPS) > 4096:
        _STAMPS.clear()
    _STAMPS[stamp] = parts
    return parts


def _reader(use_xff: bool, trailing_session: bool) -> Reader:
    """``parse_line`` for one choice of the options, with everything it looks up bound once;
    ``is_robot`` is the COUNTER robots list's test (looked up once per run of lines)."""
    plain, full, stamps = _PLAIN_LINE.match, LINE.match, _STAMPS
    counted_kinds, counted_status, counter_keys = _counter.COUNTED_KINDS, _counter.COUNTED_STATUS, _counter.keys

    def read(line: str, is_robot: Callable[[str], bool]) -> dict[str, Any]:
        match = full(line) if "\\" in line else plain(line)
        if match is None or (match.end() != len(line) and line[match.end()] != " "):
            raise ValueError("not an access log line in combined or common log format")
        host, ident, user, stamp, request, status, size, referrer, agent, trailer = match.groups()
        method, _, rest = request.partition(" ")
        url, _, protocol = rest.rpartition(" ") if " " in rest else (rest, "", "")
        xff = trailer if trailer and trailer != "-" else ""
        session_id = ""
        if trailing_session:
            xff, session_id = "", xff
        client = host
        if use_xff and xff:
            first = xff.split(",", 1)[0].strip()
            if _is_ip(first):
                client = first
        kind, repository, item_id = classify(url.partition("?")[0])
        code = int(status) if status != "-" else 0
        agent = agent or ""
        robot = is_robot(agent)
        when = stamps.get(stamp) or _stamp(stamp)
        record = {
            "client_ip": client,
            "remote_host": host,
            "ident": ident,
            "user": user,
            "time": when[0],
            "method": method,
            "url": url,
            "protocol": protocol,
            "status": code,
            "bytes": 0 if size == "-" else int(size) if len(size) <= 18 else _size(size),
            "referrer": referrer or "",
            "user_agent": agent,
            "xff": xff,
            "kind": kind,
            "repository": repository,
            "item_id": item_id,
            "robot": robot,
        }
        if trailing_session:
            record["session_id"] = session_id
        if robot or kind not in counted_kinds or code not in counted_status:
            return record  # COUNTER never counts it: no keys
        record["user_key"], record["session"], record["session_hash"], record["click"], \
            record["click_slots"] = counter_keys(client, user, session_id, agent, url, when[1], when[2], when[3])
        return record

    return read


def _batch(read: Reader) -> Callable[[list[str]], list[Any]]:
    """``parse_batch``: the record of every line, or the exception that line raised."""

    def parse_batch(lines: list[str]) -> list[Any]:
        out: list[Any] = []
        append = out.append
        is_robot = counter_robots().is_robot
        for line in lines:
            try:
                append(read(line, is_robot))
            except Exception as exc:  # that line alone is dead-lettered with it
                append(exc)
        return out

    return parse_batch


_READERS = {(xff, session): _reader(xff, session) for xff in (False, True) for session in (False, True)}
parse_batch = _batch(_READERS[False, False])


def _size(text: str) -> int:
    """The response size; a number beyond 64 bits (nothing real) is not an access log line."""
    if text == "-":
        return 0
    if len(text) > 18:
        raise ValueError(f"response size {text[:40]!r} is out of range")
    return int(text)


_OTHER = ("other", "", "")


def classify(path: str) -> tuple[str, str, str]:
    """(kind, repository, item id) of a request path."""
    if "/bitstream" in path and (found := _route(_BITSTREAM, path)):
        return found
    if "/handle/" in path and (found := _route(_HANDLE_PAGE, path)):
        return found
    if ("/items/" in path or "/entities/" in path) and (found := _route(_ENTITY, path)):
        return found
    if (path[1:2].isdigit() or path.startswith("/id/eprint/")) and (found := _route(_EPRINTS, path)):
        return found
    return _OTHER


def _route(routes: tuple[int, re.Pattern[str]], path: str) -> tuple[str, str, str] | None:
    first, pattern = routes
    match = pattern.match(path)
    if match is None:
        return None
    last = match.lastindex or 0  # each route's second group (the file name) always takes part
    _, kind, repository = ROUTES[first + (last - 1) // 2]
    ident, filename = match.group(last - 1, last)
    if kind == "download" and filename[-4:].lower() in _IMAGES and _THUMB.search(filename):
        kind = "thumbnail"
    return kind, repository, ident


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
