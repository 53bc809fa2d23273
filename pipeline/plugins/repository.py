"""COUNTER R5 / IRUS tracker events from DSpace and EPrints access logs.

``parse`` reads a raw access-log line (the ``accesslog`` plugin's fields);
``get_openurl_params(c, worker_section, pl)`` turns a parsed line into the IRUS OpenURL
parameters, or returns ``{}`` for an event COUNTER does not count, recording why in
``pl["excluded"]``: a status other than 200 or 304 (206 partial content is not a download),
a request that is neither a file download nor an item page, a robot user agent (the COUNTER
robots list plus ``opt_robots`` patterns), or, when ``opt_double_click = yes``, a repeat of
the same URL by the same IP and user agent within 30 seconds (off by default: the tracker
applies that rule itself, and a per-process filter cannot see the other processes' events).

Options, read from the tracker's section: ``opt_oai_host`` (required: the host in
``oai:<host>:<id>``), ``opt_oai_prefix`` (put before the id, default none), ``opt_base_url``
(prefix for ``svc_dat``, e.g. ``https://repo.example.ac.uk``), ``opt_use_xff`` (client IP from
X-Forwarded-For), ``opt_pseudonymise_salt`` (send ``req_id`` as a salted SHA-256 of the IP),
``opt_robots`` (extra patterns, ``|``-separated), ``opt_double_click``.
"""

from __future__ import annotations

import hashlib
import time
from configparser import ConfigParser
from functools import lru_cache
from typing import Any

from pipeline.plugins import accesslog
from pipeline.plugins._time import iso_to_utc
from pipeline.transforms.robots import RobotFilter, counter_robots, load_patterns

OPTIONS = {
    "oai_host": "host part of oai:<host>:<id> identifiers",
    "oai_prefix": "text put before the item id in rft.artnum",
    "base_url": "scheme and host put before the request path in svc_dat",
    "use_xff": "take the client IP from X-Forwarded-For",
    "pseudonymise_salt": "send req_id as sha256(salt + IP)",
    "robots": "extra robot user-agent patterns, '|'-separated",
    "double_click": "drop repeats of URL + IP + user agent within 30 seconds",
}
#: A record of ``parse`` is the accesslog plugin's.
FIELDS = accesslog.FIELDS
COUNTED = {200, 304}
DOUBLE_CLICK_SECONDS = 30
_RFT_DAT = {"download": "Request", "item": "Investigation"}
_last_click: dict[tuple[str, str, str], float] = {}


def parse(item: dict[str, Any]) -> dict[str, Any]:
    return accesslog.parse_line(item["logline"])


parse_batch = accesslog.parse_batch


def _option(c: ConfigParser, section: str, name: str, default: str = "") -> str:
    return c.get(section, f"opt_{name}", fallback=default).strip()


@lru_cache(maxsize=16)
def _robots(extra: str) -> RobotFilter:
    if not extra:
        return counter_robots()
    return RobotFilter(load_patterns() + [p for p in extra.split("|") if p.strip()])


def _excluded(pl: dict[str, Any], reason: str) -> dict[str, str]:
    pl["excluded"] = reason
    return {}


def get_openurl_params(c: ConfigParser, worker_section: str, pl: dict[str, Any]) -> dict[str, str]:
    status = pl.get("status")
    if status not in COUNTED:
        return _excluded(pl, f"status {status} is not counted (COUNTER counts 200 and 304)")
    kind = pl.get("kind")
    if kind not in _RFT_DAT:
        return _excluded(pl, f"a {kind} request, not a download or an item page")
    agent = str(pl.get("user_agent") or "")
    if _robots(_option(c, worker_section, "robots")).is_robot(agent):
        return _excluded(pl, "robot user agent")
    client = str(pl.get("client_ip") or "")
    if _option(c, worker_section, "use_xff").lower() in ("1", "yes", "true", "on") and pl.get("xff"):
        first = str(pl["xff"]).split(",", 1)[0].strip()
        client = first or client
    url = str(pl.get("url") or "")
    if _option(c, worker_section, "double_click").lower() in ("1", "yes", "true", "on"):
        now = time.monotonic()
        click = (url, client, agent)
        if now - _last_click.get(click, -1e9) < DOUBLE_CLICK_SECONDS:
            _last_click[click] = now
            return _excluded(pl, "double click within 30 seconds")
        _last_click[click] = now
        if len(_last_click) > 100_000:
            _last_click.clear()
    oai_host = _option(c, worker_section, "oai_host")
    salt = _option(c, worker_section, "pseudonymise_salt")
    req_id = hashlib.sha256((salt + client).encode()).hexdigest() if salt else client
    referrer = str(pl.get("referrer") or "")
    rfr_id = c.get(worker_section, "rfr_id", fallback="").strip() or oai_host
    return {
        "url_ver": "Z39.88-2004",
        "url_tim": iso_to_utc(str(pl["time"])),
        "rft_dat": _RFT_DAT[kind],
        "req_id": req_id,
        "req_dat": agent,
        "rft.artnum": f"oai:{oai_host}:{_option(c, worker_section, 'oai_prefix')}{pl.get('item_id', '')}",
        "svc_dat": _option(c, worker_section, "base_url").rstrip("/") + url,
        "rfr_dat": "" if referrer == "-" else referrer,
        "rfr_id": rfr_id,
    }


def check_config(c: ConfigParser, worker_section: str) -> None:
    """Called when the tracker starts: a missing option fails start-up, not every event."""
    if not _option(c, worker_section, "oai_host"):
        raise ValueError("the repository plugin needs opt_oai_host (the host in oai:<host>:<id>)")
