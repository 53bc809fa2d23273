"""The API worker (``type = api``): events, analytics and COUNTER reports over HTTP.

It reads the indices of one ``esindexer`` section (``esindexer = worker_es``: that section's
connection and index pattern) and answers, on the same uvicorn stack as HTTP ingest
(:mod:`pipeline.core.http`), only requests carrying a token: a read token from ``tokens_file``,
or an admin token from ``admin_tokens_file``, which may also delete (every delete is recorded
in ``audit_index``). The COUNTER_SUSHI paths are under ``/counter/r51/``; COUNTER wants
``/counter/r51/status`` public, which ``public_status = yes`` allows. The routes are in
:mod:`pipeline.query.app`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config, ProgramConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core.http import Tokens
from pipeline.core.httpserver import ServerSettings, serve
from pipeline.core.lifecycle import Flags
from pipeline.query.reports import ACCESS_TYPES, DATA_TYPES, CounterSettings
from pipeline.query.source import esindexer_options
from pipeline.registry import Component, Section, resolve_paths

_PLATFORM_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_./]{1,17}$")
_REGISTRY = re.compile(r"^https://registry\.projectcounter\.org/platform/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-"
                       r"[0-9a-f]{4}-[0-9a-f]{12}$")


def _exactly(*allowed: str) -> Callable[[str], str]:
    """One of ``allowed``, spelt as COUNTER spells it (case and all)."""
    def convert(text: str) -> str:
        value = text.strip()
        if value not in allowed:
            near = [a for a in allowed if a.lower() == value.lower()]
            raise ValueError(f"expected {'|'.join(near) if near else 'one of: ' + ', '.join(allowed)}")
        return value
    return convert


def _platform_id(text: str) -> str:
    value = text.strip()
    if not _PLATFORM_ID.match(value):
        raise ValueError("expected 2 to 18 letters, digits, '_', '.' or '/', starting with a letter "
                         "(the namespace of proprietary ids)")
    return value


def _registry(text: str) -> str:
    value = text.strip()
    if value and not _REGISTRY.match(value):
        raise ValueError("expected https://registry.projectcounter.org/platform/<uuid> (or nothing)")
    return value


def _ids(text: str) -> tuple[str, ...]:
    values = dt.string_list(text)
    for value in values:
        namespace, sep, rest = value.partition(":")
        if not sep or not namespace or not rest:
            raise ValueError(f"{value!r}: expected namespace:value, such as ISNI:0000000121032683 or ROR:05k0s5494")
    return values


@dataclass(frozen=True)
class ApiOptions:
    tokens_file: str = option(dt.nonempty, "file of read tokens, one per line, optionally name:token")
    esindexer: str = option(dt.name, "the esindexer section whose connection and indices are read "
                                     "(default: the only one)", "")
    admin_tokens_file: str = option(str, "file of admin tokens, which may also delete (none: nobody may)", "")
    listen: str = option(dt.listen_address, "address and port to listen on", "127.0.0.1:8515")
    max_size: int = option(dt.integer(1), "events one request may stream at most (size=)", 1_000_000)
    default_size: int = option(dt.integer(1), "events a request streams when it gives no size", 1000)
    max_range_days: int = option(dt.integer(1, 100_000), "longest time range one query may cover, in days", 400)
    precision_threshold: int = option(dt.integer(1, 40_000), "distinct values counted exactly by "
                                      "/v1/analytics/unique (beyond: within about 1 %)", 3000)
    max_report_months: int = option(dt.integer(1, 1200), "months one COUNTER report may cover", 36)
    max_concurrent_reports: int = option(dt.integer(1, 64), "reports and exports made at once (more get 503)", 4)
    request_timeout: float = option(dt.number(1), "seconds per Elasticsearch request (within stopwaitsecs)", 20.0)
    audit_index: str = option(dt.name, "index where every delete is recorded", "loglines-audit")
    public_status: bool = option(dt.boolean, "answer /counter/r51/status without a token, as COUNTER asks", False)
    platform: str = option(dt.nonempty, "COUNTER Platform: the name of the repository", "Repository")
    platform_id: str = option(_platform_id, "namespace of proprietary ids (Proprietary_ID, Institution_ID)",
                              "loglines")
    institution_name: str = option(dt.nonempty, "Institution_Name reports are for", "The World")
    customer_id: str = option(dt.nonempty, "the customer_id SUSHI requests give", "0000000000000000")
    institution_ids: tuple[str, ...] = option(_ids, "more Institution_ID values (ISNI:…, ROR:…)", ())
    created_by: str = option(dt.nonempty, "Created_By of reports", "loglines")
    registry_record: str = option(_registry, "the platform's COUNTER Registry record", "")
    publisher: str = option(str, "Publisher of the items", "")
    data_type: str = option(_exactly(*DATA_TYPES), "Data_Type of the content (a log does not say)", "Article")
    access_type: str = option(_exactly(*ACCESS_TYPES), "Access_Type of the content", "Open")
    base_url: str = option(str, "scheme and host of the repository, for item URIs", "")
    max_connections: int = option(dt.integer(1, 1_000_000), "open connections at most (more get 503)", 200)
    tls_cert: str = option(str, "certificate (PEM) to serve HTTPS with (COUNTER wants HTTPS)", "")
    tls_key: str = option(str, "its private key (PEM)", "")


def counter_settings(opts: ApiOptions | None) -> CounterSettings:
    if opts is None:
        return CounterSettings()
    return CounterSettings(opts.platform, opts.platform_id, opts.institution_name, opts.customer_id,
                           opts.institution_ids, opts.created_by, opts.registry_record, opts.publisher,
                           opts.data_type, opts.access_type, opts.base_url)


def tokens(opts: ApiOptions) -> tuple[Tokens, Tokens | None]:
    """The read tokens and the admin tokens (None when no file is named)."""
    admins = Tokens.load(Path(opts.admin_tokens_file)) if opts.admin_tokens_file else None
    return Tokens.load(Path(opts.tokens_file)), admins


def check(cfg: Config, program: ProgramConfig[ApiOptions]) -> object:
    """What ``loglines check`` and start-up verify beyond the section: the esindexer it names
    and the tokens files."""
    opts = program.options
    esindexer_options(cfg, opts.esindexer, program.name)
    return tokens(opts)


def run(cfg: Config, program: ProgramConfig[ApiOptions], flags: Flags) -> int:
    from pipeline.query.app import Api
    from pipeline.query.source import source

    opts = program.options
    read, admin = tokens(opts)
    app = Api(program.name, opts, source(cfg, opts.esindexer, opts.request_timeout, program.name), read, admin,
              cfg.redis_for(program))
    settings = ServerSettings(opts.listen, opts.tls_cert, opts.tls_key, opts.max_connections,
                              graceful_s=max(1.0, program.stopwaitsecs - 5.0))
    return serve(app, settings, flags, reuse_port=program.numprocs > 1)


def prepare(values: dict[str, Any], section: Section) -> dict[str, Any]:
    resolve_paths(values, section, "tokens_file", "admin_tokens_file", "tls_cert", "tls_key")
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise section.error("TLS needs both tls_cert and tls_key", "tls_cert" if not values["tls_cert"]
                            else "tls_key", "")
    return values


COMPONENT = Component(
    "api", "answers queries, analytics and COUNTER reports over HTTP, from Elasticsearch", ApiOptions, run,
    plugin=check, prepare=prepare, blocking=("request_timeout",))
