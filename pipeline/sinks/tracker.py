"""The tracker forwarder: COUNTER usage events to an IRUS/PIRUS tracker as OpenURL requests.

For each item: parse it with the plugin when it is a raw log line, ask the plugin's
``get_openurl_params(c, worker_section, pl)`` for the parameters (empty: not eligible, to
``other_queue``), and send ``GET endpoint_url?params`` over one keep-alive session
(:mod:`pipeline.sinks.httpclient`). The configured success status acknowledges; 429, 5xx,
timeouts and connection errors are retried with capped exponential backoff (at least
``pauseonfail``, at least ``Retry-After``); other statuses dead-letter the event with the
response. After ``retries`` attempts the event waits in the failed-requests list with its full
URL and original ``url_tim``; it is retried every ``retry_failed_every`` seconds, or on demand
with ``loglines dlq replay --failed``.

Each event has a stable id (the line's ``service:src:off``, else a hash of its parameters).
Its id is remembered in Redis (``sent_ttl``) right after the tracker accepted it, so a batch
delivered again after a crash skips what was already sent: a crash resends at most the one
request that was in flight. While Redis refuses the record (down, out of memory), the id is
kept in memory, so an outage of Redis does not cause resends either.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import reprlib
import secrets
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from pipeline.config import Config, ProgramConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core import message
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.core.queue import Consumer, Delivery, Lost, Outcome
from pipeline.core.retry import HandBack, Retry
from pipeline.core.worker import Handler, belongs_to, run_consumer
from pipeline.errors import PermanentError, PluginError, RetryableError
from pipeline.ops import dlq
from pipeline.plugin import Plugin
from pipeline.plugin import load as load_plugin
from pipeline.registry import Component
from pipeline.sinks.httpclient import Tracker


@dataclass(frozen=True)
class TrackerOptions:
    listento: str = option(dt.name, "queue the events come from (raw lines or parsed records)")
    plugin: str = option(dt.nonempty, "plugin with get_openurl_params(c, worker_section, pl)")
    endpoint_url: str = option(dt.http_url, "the tracker's OpenURL endpoint")
    url_ver: str = option(dt.nonempty, "OpenURL version sent when the plugin gives none", "Z39.88-2004")
    rfr_id: str = option(str, "referrer id (the repository host) when the plugin gives none", "")
    success: int = option(dt.integer(100, 599), "HTTP status that means success", 200)
    timeout: float = option(dt.number(0.1), "seconds to wait for the tracker", 10.0)
    pauseonfail: float = option(dt.number(0), "seconds to wait at least after a failure", 5.0)
    ratelimit: float = option(dt.number(0), "seconds between requests, per process", 0.0)
    success_queue: str = option(dt.name, "queue for events sent", "")
    other_queue: str = option(dt.name, "queue for events not eligible, with the reason", "")
    retries: int = option(dt.integer(1, 1000), "attempts before an event waits in the failed list", 5)
    max_backoff: float = option(dt.number(1), "longest wait between attempts, seconds", 300.0)
    retry_failed_every: float = option(dt.number(1), "seconds between automatic retries of failed events", 3600.0)
    sent_ttl: int = option(dt.integer(60), "seconds an event id is remembered as sent", 30 * 86400)

log = logging.getLogger(__name__)

LINE_KEYS = frozenset(("service", "logline", "src", "off", "trunc", "raw_b64", "partial"))
#: COUNTER's double-click window: two identical requests within it count once at the tracker
DOUBLE_CLICK_SECONDS = 30.0
#: what an uncertain request's resend keeps of the window, for the time it takes to arrive
WINDOW_MARGIN = 5.0
#: what ``status`` shows of a tracker: events the tracker accepted, events not eligible (to
#: ``other_queue``), events it refused (dead-lettered), events parked in the failed list
OUTCOMES = ("sent", "not_counted", "refused", "parked")


@dataclass
class Event:
    event_id: str
    params: dict[str, str]
    record: dict[str, Any]

    @property
    def url_tim(self) -> str:
        return self.params.get("url_tim", "")


def event_id(item: Mapping[str, Any], params: Mapping[str, str]) -> str:
    """A log line's event: its service, file and offset; any other record's: its parameters
    (a bare record cannot borrow a line's id and so pre-suppress a real event)."""
    line_id = message.item_id(item) if "logline" in item else None
    if line_id is not None:
        return f"{item.get('service', '')}:{line_id}"
    return hashlib.sha1(orjson.dumps(dict(params), option=orjson.OPT_SORT_KEYS)).hexdigest()


class Forwarder:
    def __init__(self, cfg: Config, program: ProgramConfig[TrackerOptions], consumer: Consumer, flags: Flags) -> None:
        self.opts: TrackerOptions = program.options
        self.section, self.consumer, self.flags = program.name, consumer, flags
        self.parser = cfg.raw_parser()
        self.plugin = load_tracker_plugin(cfg, program)
        assert self.plugin.get_openurl_params is not None  # checked by load_tracker_plugin
        self.get_openurl_params = self.plugin.get_openurl_params
        self.tracker = Tracker(self.opts, consumer.stats)
        self.keys = consumer.keys
        self.next_retry = time.monotonic() + self.opts.retry_failed_every
        self.unrecorded: set[str] = set()  # sent, but Redis did not take the record yet
        self._secret = b""  # the key of the MAC on failed events (from Redis, at first need)

    def secret(self) -> bytes:
        """A random key kept in Redis (made once, shared by every tracker process): only an event
        this tracker parked carries a valid MAC, so no pushed record can ask for a prepared URL."""
        if not self._secret:
            key = self.keys.secret("tracker")
            self.consumer.client.set(key, secrets.token_hex(32).encode(), nx=True)
            self._secret = bytes(self.consumer.client.get(key))
        return self._secret

    def mac(self, event_id: str, params: Mapping[str, str], record: Any) -> str:
        signed = message.dumps_anyway([event_id, dict(sorted(params.items())), record])
        return hmac.new(self.secret(), signed, hashlib.sha256).hexdigest()

    def record_sent(self) -> None:
        """Remember sent events in Redis; what Redis refuses now is kept here until it takes it."""
        while self.unrecorded:
            event_id = next(iter(self.unrecorded))
            self.consumer.client.set(self.keys.sent(event_id), b"1", ex=self.opts.sent_ttl)
            self.unrecorded.discard(event_id)

    def prepare(self, item: dict[str, Any]) -> Event | tuple[str, Any]:
        """An event to send, or ("other", record) / ("dead", reason)."""
        if isinstance(item.get("openurl"), dict):  # a failed event coming back: send it as it was
            prepared = {str(k): str(v) for k, v in item["openurl"].items()}
            eid, parked = str(item.get("event_id", "")), item.get("record") or {}
            if not hmac.compare_digest(str(item.get("mac", "")), self.mac(eid, prepared, parked)):
                return ("other", {"excluded": "a prepared tracker request this tracker did not "
                                              "park (no valid MAC): not sent", "item": item})
            return Event(eid, prepared, parked)
        record = self.plugin.parse(item) if item.keys() <= LINE_KEYS and "logline" in item else item
        if not record:
            return ("other", {**item, "excluded": "the plugin found nothing to send"})
        record = dict(record)
        for key in ("service", "src", "off"):
            if key in item and key not in record:
                record[key] = item[key]
        params = self.get_openurl_params(self.parser, self.section, record)
        if not params:
            record.setdefault("excluded", "not eligible for the tracker")
            return ("other", record)
        params = {str(k): str(v) for k, v in params.items()}
        params.setdefault("url_ver", self.opts.url_ver)
        if not params.get("rfr_id") and self.opts.rfr_id:
            params["rfr_id"] = self.opts.rfr_id
        return Event(event_id(item if "logline" in item else record, params), params, record)

    def deliver(self, event: Event, delivery: Delivery) -> str | None:
        """Send until accepted; None when sent (or found sent), else the reason it is parked.

        Before each request it asks Redis whether the event was sent meanwhile and whether the
        batch is still this process's (a process paused past the heartbeat TTL was reaped: the
        batch is done elsewhere, :class:`Lost`). A request that went out without an answer may
        have been counted: it is sent again only within COUNTER's double-click window of that
        first try, where the tracker counts the two as one, and else parked as uncertain."""
        retry = Retry(self.section, self.flags, base=1.0, cap=self.opts.max_backoff,
                      floor=self.opts.pauseonfail)
        uncertain_since: float | None = None
        for attempt in range(1, self.opts.retries + 1):
            if self.sent_meanwhile(event, delivery):
                return None
            try:
                self.tracker.send(event.params)
                self.unrecorded.add(event.event_id)
                self.record_sent()
                return None
            except RetryableError as exc:
                if exc.uncertain and uncertain_since is None:
                    uncertain_since = time.monotonic()
                wait = retry.delay(exc.retry_after)
                if uncertain_since is not None:
                    left = uncertain_since + DOUBLE_CLICK_SECONDS - WINDOW_MARGIN - time.monotonic()
                    if left <= 0 or exc.retry_after > left:
                        return (f"uncertain: a request got no answer ({exc}) and no resend was "
                                f"accepted within the {DOUBLE_CLICK_SECONDS:g} s double-click "
                                "window; the tracker may have counted it, so a replay may count it twice")
                    wait = min(wait, left / 2)
                if attempt == self.opts.retries:
                    doubt = (" (uncertain: a request got no answer, the tracker may have counted it, "
                             "so a replay may count it twice)" if uncertain_since is not None else "")
                    return f"tracker unavailable after {attempt} attempts: {exc}{doubt}"
                retry.failed(f"tracker failed ({exc}); attempt {attempt} of {self.opts.retries}",
                             wait=wait)
        return "unreachable"

    def sent_meanwhile(self, event: Event, delivery: Delivery) -> bool:
        """One round trip: was the event sent by someone since, and is the batch still ours?"""
        with self.consumer.client.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.sent(event.event_id))
            pipe.llen(self.consumer.inflight_key)
            sent, held = pipe.execute()
        if sent or event.event_id in self.unrecorded:
            return True
        if int(held) != len(delivery.raws):
            raise Lost()
        return False

    def handle(self, delivery: Delivery) -> Outcome:
        sent: list[dict[str, Any]] = []
        others: list[Any] = []
        dead: list[bytes] = []
        parked: list[bytes] = []
        worker, queue = self.consumer.id, self.opts.listento
        events: list[tuple[dict[str, Any], Event]] = []
        tally = dict.fromkeys(OUTCOMES, 0)
        for item in delivery.items or ():
            try:
                prepared = self.prepare(item)
            except Exception as exc:
                dead.append(message.dead_letter(
                    reason=f"plugin {self.plugin.name} raised {type(exc).__name__}: {exc}",
                    worker=worker, queue=queue, item=item, detail=traceback.format_exc(limit=4)))
                continue
            if isinstance(prepared, Event):
                events.append((item, prepared))
            else:
                others.append(prepared[1])
        with self.consumer.client.pipeline(transaction=False) as pipe:
            for _, event in events:
                pipe.exists(self.keys.sent(event.event_id))
            already = pipe.execute() if events else []
        for (item, event), was_sent in zip(events, already, strict=True):
            if was_sent or event.event_id in self.unrecorded:
                sent.append(event.record)
                continue
            if self.flags.stop:
                raise HandBack()  # what was sent is remembered by id: not sent twice
            try:
                reason = self.deliver(event, delivery)
            except PermanentError as exc:
                dead.append(message.dead_letter(
                    reason=f"tracker refused the event: {exc}", worker=worker, queue=queue,
                    item=item, detail=self.tracker.url(event.params)))
                tally["refused"] += 1
                continue
            if reason is None:
                sent.append(event.record)
                tally["sent"] += 1
            else:
                parked.append(self.parked_entry(event, reason))
                tally["parked"] += 1
        pushes = []
        for queue_name, records in ((self.opts.success_queue, sent), (self.opts.other_queue, others)):
            if records and queue_name:
                payloads, bad = message.pack(records, self.consumer.cfg.message_bytes)
                pushes += [(queue_name, payload) for payload in payloads]
                dead += [message.dead_letter(reason=f"a record for {queue_name} {why}", worker=worker,
                                             queue=queue, item={"unencodable": reprlib.repr(record)})
                         for record, why in bad]

        if parked:
            log.error("%s: %d event(s) parked in the failed-requests list", self.section, len(parked))
        tally["not_counted"] = len(others)
        return Outcome(pushes=pushes, dead=dead, count=len(delivery.items or ()),
                       appends=[(self.keys.failed, entry) for entry in parked],
                       tally=tally, out=tally["sent"])

    def parked_entry(self, event: Event, reason: str) -> bytes:
        return message.dumps_anyway({
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "worker": self.consumer.id,
            "queue": self.opts.listento,
            "reason": reason,
            "url": self.tracker.url(event.params),
            "url_tim": event.url_tim,
            "item": {"openurl": event.params, "event_id": event.event_id, "record": event.record,
                     "mac": self.mac(event.event_id, event.params, event.record)},
        })

    def retry_failed(self) -> None:
        if time.monotonic() < self.next_retry:
            return
        self.next_retry = time.monotonic() + self.opts.retry_failed_every
        moved = dlq.replay(self.consumer.client, self.keys, self.keys.failed, only_queue=self.opts.listento)
        if moved:
            log.info("%s: %d failed event(s) queued again for another try", self.section, moved)


def load_tracker_plugin(cfg: Config, program: ProgramConfig[TrackerOptions]) -> Plugin:
    plugin = load_plugin(program.options.plugin, cfg.plugin_dirs, cfg.plugin_options(program.name))
    if plugin.get_openurl_params is None:
        raise PluginError(f"plugin {plugin.name!r} has no get_openurl_params(c, worker_section, pl): "
                          "a tracker needs it")
    check = getattr(plugin.module, "check_config", None)
    if check is not None:
        try:
            check(cfg.raw_parser(), program.name)
        except ValueError as exc:
            raise PluginError(f"plugin {plugin.name!r}, [{program.name}]: {exc}") from None
    return plugin


#: failed-list entries ``status`` reads at most; beyond, the count is an estimate
FAILED_SCANNED = 2000


def status(cfg: Config, program: ProgramConfig[TrackerOptions], client: redis.Redis) -> dict[str, Any]:
    """How many of this tracker's events wait in the failed-requests list for another try."""
    keys = Keys(cfg.redis_for(program).prefix)
    length = int(client.llen(keys.failed))
    entries = client.lrange(keys.failed, 0, FAILED_SCANNED - 1) if length else []
    mine = 0
    for raw in entries:
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and belongs_to(str(entry.get("worker", "")), program.name):
            mine += 1
    estimate = len(entries) < length
    return {"retrying": round(mine * length / len(entries)) if estimate and entries else mine,
            "retrying_estimate": estimate}


def run(cfg: Config, program: ProgramConfig[TrackerOptions], flags: Flags) -> int:
    opts: TrackerOptions = program.options
    holder: dict[str, Forwarder] = {}

    def make_handler(consumer: Consumer, flags: Flags) -> Handler:
        holder["forwarder"] = Forwarder(cfg, program, consumer, flags)
        return holder["forwarder"].handle

    def tick() -> None:
        if "forwarder" in holder:
            holder["forwarder"].retry_failed()

    return run_consumer(cfg, program, opts.listento, make_handler, flags, tick=tick)


COMPONENT = Component(
    "tracker", "sends COUNTER usage events to an IRUS/PIRUS tracker as OpenURL requests",
    TrackerOptions, run, reads=("listento",), writes=("success_queue", "other_queue"),
    plugin=load_tracker_plugin, plugin_options=True, original_command="pirus2.py",
    aliases={"repository_plugin": "plugin"}, blocking=("timeout",), status=status, outcomes=OUTCOMES)
