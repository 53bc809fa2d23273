"""HTTP ingest: applications POST events; a 2xx answer means they are in Redis.

``POST /v1/events`` takes a JSON object, a JSON array of objects, or NDJSON (gzip accepted);
``POST /logger/insert`` takes the crowdsourcing logger's one JSON object and answers ``True``
as it did. A request is all or nothing: a bad line anywhere is a 400 naming it, and nothing of
the request is enqueued. Every event gets the server time when it has none, the name of the
token that sent it, and a stable ``event_id``: from the ``Idempotency-Key`` header and its
position in the request, else its own ``id`` field, else a hash of the event (the indexer
uses it as the document id, so a replayed request never makes a second document).

Many concurrent requests share one commit (a group, :mod:`pipeline.sources.groupcommit`): one
Lua script pushes every request's messages and records each ``Idempotency-Key`` with the answer
given, atomically, so with ``appendfsync always`` a group costs one fsync, and a retry with the
same key is answered as the first request was without enqueuing again, whichever process of
``numprocs`` takes it.
Over ``high_water`` messages in the queue (until it is back under ``low_water``), or with
Redis unreachable, requests are answered 503 with ``Retry-After``.

``GET /metrics`` (with a token, as every endpoint) answers the worker's request metrics in the
Prometheus format (:mod:`pipeline.core.httpstats`, shared with the api worker): requests by
endpoint, method and status, their duration, those in flight; and events taken. ``numprocs``
processes share the port, so a scrape reaches any one of them: each counts in memory and adds
its counts to the ``stats`` hash about once a second, and ``/metrics`` answers the section's
totals from there.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from pipeline.config import Config, ProgramConfig, RedisConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core import message
from pipeline.core.connection import connect_async
from pipeline.core.http import (
    HttpError,
    Receive,
    Request,
    Scope,
    Send,
    Tokens,
    answer,
    answer_error,
    answer_json,
    lifespan,
)
from pipeline.core.httpserver import ServerSettings, serve
from pipeline.core.httpstats import CONTENT_TYPE, RequestStats
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.core.stats import figures as stats_figures
from pipeline.registry import Component, Section, resolve_paths
from pipeline.sources.groupcommit import Committer

if TYPE_CHECKING:  # Prometheus' client is loaded at the first scrape
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpOptions:
    pushto: str = option(dt.name, "queue the events are pushed to")
    tokens_file: str = option(dt.nonempty, "file of tokens, one per line, optionally name:token")
    listen: str = option(dt.listen_address, "address and port to listen on", "127.0.0.1:8514")
    servicename: str = option(dt.nonempty, "service name put on events that have none", "")
    max_body_bytes: int = option(dt.byte_size, "largest request body (after gzip)", 10 * 1024 * 1024)
    max_events: int = option(dt.integer(1, 1_000_000), "events per request at most", 10_000)
    high_water: int = option(dt.integer(1), "queue length (messages) at which requests get 503", 100_000)
    low_water: int = option(dt.integer(0), "queue length under which they are taken again "
                                           "(default: 80% of high_water)", 0)
    time_field: str = option(dt.nonempty, "field given the server time when an event has none", "@timestamp")
    idempotency_ttl: int = option(dt.integer(60), "seconds an Idempotency-Key is remembered", 86400)
    request_timeout: float = option(dt.number(0.1), "seconds a client has to send its request", 10.0)
    max_connections: int = option(dt.integer(1, 1_000_000), "open connections at most (more get 503)", 1000)
    max_pending_bytes: int = option(dt.byte_size, "request bodies being read and committed at once, "
                                                  "in bytes (the memory bound)", 64 * 1024 * 1024)
    tls_cert: str = option(str, "certificate (PEM) to serve HTTPS with", "")
    tls_key: str = option(str, "its private key (PEM)", "")


class Ingest:
    """The ASGI application of one ``http`` worker."""

    def __init__(self, name: str, opts: HttpOptions, rcfg: RedisConfig) -> None:
        self.name, self.opts, self.rcfg = name, opts, rcfg
        self.tokens = Tokens.load(Path(opts.tokens_file))
        self.keys = Keys(rcfg.prefix)
        self.committer: Committer | None = None
        self.budget: asyncio.Semaphore | None = None  # in units of 64 KiB of pending bodies
        self.service = opts.servicename
        # request metrics, and the events taken in ``stats``, flushed through the committer's client
        self.requests = RequestStats(name, self.keys)
        self.stats = self.requests.stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self._startup, self._shutdown)
            return
        if scope["type"] != "http":
            return
        request = Request.of(scope, receive)
        endpoint = request.path if request.path in ENDPOINTS else "other"
        with self.requests.counting(send, endpoint, request.method) as counted:
            try:
                await self._route(request, counted)
            except HttpError as error:
                await answer_error(counted, error)

    async def _startup(self) -> None:
        self.committer = Committer(connect_async(self.rcfg), self.keys, self.opts, self.name, self.rcfg)
        self.committer.start()
        self.requests.start(self.committer.client)
        self.budget = asyncio.Semaphore(max(1, self.opts.max_pending_bytes // UNIT))

    async def _shutdown(self) -> None:
        if self.committer is not None:
            await self.requests.stop()
            await self.committer.stop()

    async def _route(self, request: Request, send: Send) -> None:
        token = self.tokens.name_of(request.headers)  # first: nothing, not even a 404, answers unasked
        if token is None:
            raise HttpError(401, "a valid token is needed (Authorization: Bearer <token>)",
                            {"WWW-Authenticate": 'Bearer realm="loglines"'})
        method = ENDPOINTS.get(request.path)
        if method is None:
            raise HttpError(404, f"no such endpoint: {request.path[:200]}")
        if request.method != method:
            raise HttpError(405, f"{request.path} takes {method}", {"Allow": method})
        assert self.committer is not None
        if request.path == "/healthz":
            healthy = self.committer.writable and time.monotonic() - self.committer.checked < 2
            await answer_json(send, 200 if healthy else 503,
                              {"redis": "takes writes" if healthy else "not taking writes"})
            return
        if request.path == "/readyz":
            ready = self.committer.writable and not self.committer.refusing
            await answer_json(send, 200 if ready else 503,
                              {"ready": ready, "over_high_water": self.committer.refusing})
            return
        if request.path == "/metrics":
            await answer(send, 200, await self._metrics(), CONTENT_TYPE)
            return
        await self._ingest(request, send, token, legacy=request.path == "/logger/insert")

    async def _ingest(self, request: Request, send: Send, token: str, legacy: bool) -> None:
        assert self.committer is not None and self.budget is not None
        kind = request.content_type
        if legacy:
            pass  # the crowdsourcing logger's clients sent what they sent: the body is JSON
        elif kind not in ("application/json", "application/x-ndjson", "application/jsonl"):
            raise HttpError(415, f"Content-Type {kind!r}: send application/json or application/x-ndjson")
        if self.committer.refusing or not self.committer.writable:
            raise HttpError(503, "the queue is over its high-water mark" if self.committer.refusing
                            else "Redis is not taking writes now", {"Retry-After": "2"})
        idem = request.headers.get("idempotency-key", "")
        if len(idem) > 255 or not idem.isprintable():
            raise HttpError(400, "Idempotency-Key must be at most 255 printable characters")
        declared = request.headers.get("content-length", "")
        wanted = self.opts.max_body_bytes
        if declared.isdigit() and request.headers.get("content-encoding", "") in ("", "identity"):
            wanted = min(wanted, int(declared))
        units = max(1, min(-(-wanted // UNIT), self.opts.max_pending_bytes // UNIT))
        await _acquire(self.budget, units, self.opts.request_timeout)
        try:
            body = await request.body(self.opts.max_body_bytes, self.opts.request_timeout)
            events = parse(body, kind if not legacy else "application/json", self.opts.max_events,
                           single=legacy)
            messages = self._messages(events, token, idem)
            accepted = b"True" if legacy else orjson.dumps({"accepted": len(events)})
            idem_key = self.keys.idempotency(token, hashlib.sha1(idem.encode()).hexdigest()) if idem else ""
            given, replayed = await self.committer.commit(idem_key, accepted, messages)
        finally:
            for _ in range(units):
                self.budget.release()
        if not replayed:
            self.stats.add(len(events))
            self.stats.count("items_out", len(events))
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        if legacy:
            await answer(send, 200, given, "text/plain", headers)
        else:
            await answer(send, 202, given, headers=headers)

    async def _metrics(self) -> bytes:
        """The section's request metrics (every process's, as of their last flush: this one's
        flushed now), in the Prometheus format."""
        from pipeline.monitor import metrics  # Prometheus' client, loaded at the first scrape

        assert self.committer is not None
        totals = await self.requests.totals()
        counters, histograms = stats_figures(totals, self.name)
        writable, refusing = self.committer.writable, self.committer.refusing

        def families() -> Iterator[Metric]:
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

            yield from self.requests.families(counters, histograms)
            events = CounterMetricFamily("loglines_http_events_total", "Events taken (in Redis)", labels=["worker"])
            events.add_metric([self.name], totals.get(self.name, 0))
            state = GaugeMetricFamily("loglines_http_redis_writable", "Whether Redis takes this process's "
                                      "writes", labels=["worker"])
            state.add_metric([self.name], 1 if writable else 0)
            high = GaugeMetricFamily("loglines_http_over_high_water", "Whether the queue is over "
                                     "high_water (requests get 503)", labels=["worker"])
            high.add_metric([self.name], 1 if refusing else 0)
            yield from (events, state, high)

        return metrics.exposition(families)

    def _messages(self, events: list[dict[str, Any]], token: str, idem: str) -> list[bytes]:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for position, event in enumerate(events):
            if idem:
                origin = f"{token}\x00key\x00{idem}\x00{position}"
            elif event.get("id") is not None:
                origin = f"{token}\x00id\x00{orjson.dumps(event['id']).decode()}"
            elif self.opts.time_field in event:  # its own time: the same event sent again is the same
                origin = "\x00".join((token, "event", orjson.dumps(event, option=orjson.OPT_SORT_KEYS).decode()))
            else:  # nothing of its own tells it from the next alike (a click, a submit): a new event
                origin = f"{token}\x00new\x00{uuid.uuid4().hex}"
            event["event_id"] = hashlib.sha1(origin.encode("utf-8", "surrogatepass")).hexdigest()
            event.setdefault(self.opts.time_field, now)
            event["token_name"] = token
            if self.service:
                event.setdefault("service", self.service)
        messages, bad = message.pack(events, self.rcfg.message_bytes)
        if bad:
            index = next(i for i, e in enumerate(events) if e is bad[0][0])
            raise HttpError(400, f"event {index + 1}: {bad[0][1]}")
        cap = self.rcfg.max_payload_bytes
        if any(len(m) > cap for m in messages):  # JSON re-encoded can be longer (1e15 is 1000000000000000.0)
            index = next((i for i, e in enumerate(events) if len(orjson.dumps(e)) > cap - 64), 0)
            raise HttpError(413, f"event {index + 1} takes more than max_payload_bytes ({cap}) once encoded: "
                                 "no worker could take it")
        return messages


UNIT = 64 * 1024
#: path -> the method it takes (the ``endpoint`` label of the request metrics is one of these)
ENDPOINTS = {"/v1/events": "POST", "/logger/insert": "POST", "/healthz": "GET", "/readyz": "GET",
             "/metrics": "GET"}


async def _acquire(budget: asyncio.Semaphore, units: int, timeout: float) -> None:
    """Take ``units`` of the pending-bytes budget, or 503 when the wait would outlast the
    request's time."""
    taken = 0
    try:
        async with asyncio.timeout(timeout):
            for _ in range(units):
                await budget.acquire()
                taken += 1
    except TimeoutError:
        for _ in range(taken):
            budget.release()
        raise HttpError(503, "too many requests are being taken at once", {"Retry-After": "1"}) from None


def parse(body: bytes, kind: str, max_events: int, single: bool = False) -> list[dict[str, Any]]:
    """The events of a body, all or nothing: the first bad line (or element) is a 400 naming
    it and why."""
    if kind == "application/json":
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"the body is not JSON: {exc}") from None
        if isinstance(value, dict):
            events = [value]
        elif isinstance(value, list) and not single:
            events = value
        else:
            raise HttpError(400, "the body must be a JSON object" + ("" if single else " or an array of objects"))
        for index, event in enumerate(events):
            if type(event) is not dict:
                raise HttpError(400, f"element {index + 1} is a {type(event).__name__}, not an object")
    else:
        events = []
        for number, line in enumerate(body.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise HttpError(400, f"line {number} is not JSON: {exc}") from None
            if type(event) is not dict:
                raise HttpError(400, f"line {number} is a {type(event).__name__}, not an object")
            events.append(event)
            if len(events) > max_events:
                break
    if len(events) > max_events:
        raise HttpError(413, f"more than {max_events} events in one request (max_events)")
    if not events:
        raise HttpError(400, "the request holds no event")
    for index, event in enumerate(events):
        if message.too_deep(event):
            raise HttpError(400, f"event {index + 1} nests deeper than {message.MAX_DEPTH} levels")
    return events


def run(cfg: Config, program: ProgramConfig[HttpOptions], flags: Flags) -> int:
    opts = program.options
    app = Ingest(program.name, opts, cfg.redis_for(program))
    settings = ServerSettings(opts.listen, opts.tls_cert, opts.tls_key, opts.max_connections,
                              graceful_s=max(1.0, program.stopwaitsecs - 5.0), header_timeout_s=opts.request_timeout)
    return serve(app, settings, flags, reuse_port=program.numprocs > 1)


def prepare(values: dict[str, Any], section: Section) -> dict[str, Any]:
    values["servicename"] = values["servicename"] or section.name.split("_", 1)[-1]
    resolve_paths(values, section, "tokens_file", "tls_cert", "tls_key")
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise section.error("TLS needs both tls_cert and tls_key", "tls_cert" if not values["tls_cert"]
                            else "tls_key", "")
    if values["low_water"] and values["low_water"] >= values["high_water"]:
        raise section.error(f"must be below high_water ({values['high_water']})", "low_water",
                            str(values["low_water"]))
    return values


def validate(opts: HttpOptions, rcfg: RedisConfig, section: Section) -> None:
    if opts.max_body_bytes + 64 * 1024 > rcfg.max_payload_bytes:
        raise section.error(f"must stay 64 KiB under max_payload_bytes ({rcfg.max_payload_bytes}) of "
                            f"[{rcfg.name}]: one event can be as long as a body", "max_body_bytes",
                            section.items.get("max_body_bytes", str(opts.max_body_bytes)))


COMPONENT = Component(
    "http", "takes events over HTTP; answers 2xx once they are in Redis", HttpOptions, run,
    writes=("pushto",), prepare=prepare, validate=validate, blocking=("request_timeout",))
