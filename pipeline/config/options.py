"""What each worker type accepts in its ``loglines.cfg`` section: keys, types and defaults.

A type is a frozen dataclass; each field's metadata holds the converter from
:mod:`pipeline.datatypes` and a one-line description used in error messages and docs.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from pipeline.config import datatypes as dt


def key(convert: Any, doc: str, default: Any = MISSING) -> Any:
    """A configuration key: its converter, a description and (if optional) a default."""
    return field(default=default, metadata={"convert": convert, "doc": doc})


@dataclass(frozen=True)
class WatcherOptions:
    logfile: tuple[str, ...] = key(dt.string_list, "file(s) to tail; globs allowed, comma-separated")
    pushto: str = key(dt.name, "queue the lines are pushed to")
    servicename: str = key(dt.nonempty, "service name put on every line", "")
    batch_lines: int = key(dt.integer(1, 100_000), "lines per batch at most", 500)
    batch_ms: int = key(dt.integer(1, 60_000), "milliseconds a batch may wait to fill", 200)
    max_line_bytes: int = key(dt.byte_size, "longer lines are truncated and flagged", 1024 * 1024)
    start: str = key(dt.choice("beginning", "end"), "where to start in a file never seen", "beginning")
    poll_ms: int = key(dt.integer(10, 10_000), "how often files are checked for growth", 100)
    rescan_ms: int = key(dt.integer(100, 600_000), "how often globs and rotation are checked", 1000)
    close_after_s: float = key(dt.number(0), "a rotated-away file is closed this long after EOF", 5.0)
    allowed_roots: tuple[str, ...] = key(
        dt.string_list, "directories a watched path (after symlinks) must lie in; empty: any", ()
    )


@dataclass(frozen=True)
class ParserOptions:
    listento: str = key(dt.name, "queue the raw lines come from")
    pushto: tuple[str, ...] = key(dt.name_list, "queue(s) each parsed record goes to (fan-out)")
    plugin: str = key(dt.nonempty, "plugin: built-in short name, plugins/ module or dotted path")
    other_queue: str = key(dt.name, "queue for items the plugin does not want", "")
    accept: str = key(dt.string_list, "only records with field=value (value|value) go to pushto", ())
    plugin_timeout_s: float = key(dt.number(0), "per-item time limit for the plugin; 0: none", 0.0)


@dataclass(frozen=True)
class BrokerOptions:
    listento: str = key(dt.name, "queue the batches come from")
    fanout: tuple[str, ...] = key(dt.name_list, "queues every batch is copied to")


@dataclass(frozen=True)
class FileLoggerOptions:
    listento: str = key(dt.name, "queue the items come from")
    logfile: str = key(dt.nonempty, "file the items are appended to")
    format: str = key(dt.choice("raw", "ndjson"), "raw: the log line; ndjson: the whole item", "raw")
    fsync: bool = key(dt.boolean, "fsync the file before a batch is acknowledged", True)


def _url(text: str) -> str:
    value = text.strip()
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ValueError("expected an http:// or https:// URL")
    return value


@dataclass(frozen=True)
class TrackerOptions:
    listento: str = key(dt.name, "queue the events come from (raw lines or parsed records)")
    plugin: str = key(dt.nonempty, "plugin with get_openurl_params(c, worker_section, pl)")
    endpoint_url: str = key(_url, "the tracker's OpenURL endpoint")
    url_ver: str = key(dt.nonempty, "OpenURL version sent when the plugin gives none", "Z39.88-2004")
    rfr_id: str = key(str, "referrer id (the repository host) when the plugin gives none", "")
    success: int = key(dt.integer(100, 599), "HTTP status that means success", 200)
    timeout: float = key(dt.number(0.1), "seconds to wait for the tracker", 10.0)
    pauseonfail: float = key(dt.number(0), "seconds to wait at least after a failure", 5.0)
    ratelimit: float = key(dt.number(0), "seconds between requests, per process", 0.0)
    success_queue: str = key(dt.name, "queue for events sent", "")
    other_queue: str = key(dt.name, "queue for events not eligible, with the reason", "")
    retries: int = key(dt.integer(1, 1000), "attempts before an event waits in the failed list", 5)
    max_backoff: float = key(dt.number(1), "longest wait between attempts, seconds", 300.0)
    retry_failed_every: float = key(dt.number(1), "seconds between automatic retries of failed events", 3600.0)
    sent_ttl: int = key(dt.integer(60), "seconds an event id is remembered as sent", 30 * 86400)


@dataclass(frozen=True)
class EsIndexerOptions:
    listento: str = key(dt.name, "queue the records come from")
    index: str = key(dt.nonempty, "index name; strftime codes use the event's own time", "loglines-%Y.%m.%d")
    hosts: tuple[str, ...] = key(dt.string_list, "Elasticsearch URLs", ("http://127.0.0.1:9200",))
    username: str = key(str, "basic-auth user", "")
    password: str = key(str, "basic-auth password", "")
    api_key: str = key(str, "API key (instead of username/password)", "")
    ca_certs: str = key(str, "CA bundle for https", "")
    verify_certs: bool = key(dt.boolean, "verify the server's certificate", True)
    pipeline: str = key(str, "ingest pipeline applied to every document", "")
    batch_docs: int = key(dt.integer(1, 100_000), "documents per bulk request at most", 1000)
    batch_bytes: int = key(dt.byte_size, "bytes per bulk request at most", 5 * 1024 * 1024)
    flush_ms: int = key(dt.integer(0, 60_000), "how long small messages are gathered into one bulk", 200)
    time_field: str = key(dt.nonempty, "record field with the event time (ISO 8601)", "time")
    id_fields: tuple[str, ...] = key(dt.string_list, "fields hashed into the id of records without a line id", ())
    request_timeout: float = key(dt.number(1), "seconds per bulk request", 60.0)
    max_backoff: float = key(dt.number(1), "longest wait between retries, seconds", 60.0)
    template: str = key(dt.choice("none", "access", "kontext"),
                        "index template 'loglines es setup' installs for this index", "none")


def _cron(text: str) -> str:
    """Five cron fields, checked by the cron library (impossible dates such as 31 February too)."""
    from datetime import datetime

    from cronsim import CronSim, CronSimError

    try:
        CronSim(text.strip(), datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"expected five cron fields (minute hour day month weekday): {exc}") from None
    return text.strip()


@dataclass(frozen=True)
class ScheduleOptions:
    task: str = key(dt.choice("snapshot"), "what to run")
    cron: str = key(_cron, "when, as five cron fields (minute hour day month weekday), local time")
    repository: str = key(dt.name, "snapshot repository")
    esindexer: str = key(dt.name, "the esindexer section whose Elasticsearch connection to use", "")
    location: str = key(str, "register the repository as a filesystem repository here first", "")
    indices: str = key(str, "indices to snapshot (default: all)", "")
    smtp_host: str = key(str, "SMTP server for the report (no mail when empty)", "")
    smtp_port: int = key(dt.port, "SMTP port", 25)
    smtp_starttls: bool = key(dt.boolean, "use STARTTLS", False)
    smtp_user: str = key(str, "SMTP user", "")
    smtp_password: str = key(str, "SMTP password", "")
    mail_from: str = key(str, "sender of the report", "loglines@localhost")
    mail_to: tuple[str, ...] = key(dt.string_list, "recipients of the report", ())


WORKER_TYPES: dict[str, type] = {
    "watcher": WatcherOptions,
    "parser": ParserOptions,
    "broker": BrokerOptions,
    "filelogger": FileLoggerOptions,
    "tracker": TrackerOptions,
    "esindexer": EsIndexerOptions,
    "schedule": ScheduleOptions,
}

#: Types whose sections may carry ``opt_<name>`` keys for their plugin.
PLUGIN_OPTIONS = {"parser", "tracker"}

#: Types that run a single process only (their state is per process).
SINGLE_PROCESS = {"watcher", "filelogger", "schedule"}

#: The original system's scripts and the built-in type each one became.
ORIGINAL_COMMANDS = {
    "logfilewatcher.py": "watcher",
    "broker.py": "broker",
    "pirus2.py": "tracker",
    "logfromqueue.py": "filelogger",
}

#: Keys under another name in the original system.
ALIASES = {"repository_plugin": "plugin"}


def schema(options_type: type) -> dict[str, Any]:
    """Key name -> dataclass field of one worker type."""
    return {f.name: f for f in fields(options_type)}


def required(options_type: type) -> list[str]:
    return [f.name for f in fields(options_type) if f.default is MISSING]
