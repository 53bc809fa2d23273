"""The monitor worker (``type = monitor``): metrics, health, alerts and a status page.

It serves, on ``listen`` (127.0.0.1:9108), behind the console's user and password (HTTP Basic)
or a bearer token of ``tokens_file``:

- ``/metrics``: the whole pipeline in the Prometheus format, collected at each scrape by the
  collector ``loglines status`` reads (:mod:`pipeline.monitor.metrics`);
- ``/healthz``: 200, or 503 naming every failing check, as of the last round of checks;
- ``/``: the status page (:mod:`pipeline.monitor.page`).

A thread runs the checks every ``check_s`` (:mod:`pipeline.monitor.health`), moves the alerts
on (:mod:`pipeline.monitor.alerts`) and, every ``sample_s``, samples the charts' series.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config, ProgramConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core.connection import REDIS_ERRORS, connect
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
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags, sleep_unless
from pipeline.core.logsetup import safe
from pipeline.core.worker import consumer_id
from pipeline.monitor import figures, page
from pipeline.monitor.alerts import Alert, Alerts, Notifier
from pipeline.monitor.health import RULES, Check, Checker
from pipeline.monitor.history import History
from pipeline.monitor.status import collect
from pipeline.registry import Component, Section, resolve_paths

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)


def _rules(text: str) -> tuple[str, ...]:
    names = dt.name_list(text)
    for name in names:
        if name not in RULES:
            raise ValueError("expected rule names among: " + ", ".join(RULES))
    return names


@dataclass(frozen=True)
class MonitorOptions:
    listen: str = option(dt.listen_address, "address and port of /metrics, /healthz and the page", "127.0.0.1:9108")
    console_auth: bool = option(dt.boolean, "let in the console's username and password (HTTP Basic)", True)
    tokens_file: str = option(str, "file of name:token lines let in as Authorization: Bearer (Prometheus)", "")
    check_s: float = option(dt.number(0.05), "seconds between two rounds of checks", 15.0)
    sample_s: float = option(dt.number(0.05), "seconds between two samples of the charts", 30.0)
    history_s: float = option(dt.number(60), "seconds of samples kept (the charts' span)", 3600.0)
    remind_s: float = option(dt.number(0), "seconds between reminders of a firing alert (0: none)", 3600.0)
    disabled_rules: tuple[str, ...] = option(_rules, "rules not checked", ())
    webhook_url: str = option(str, "URL alerts are POSTed to", "")
    webhook_format: str = option(dt.choice("slack", "json"), "slack ({\"text\": ...}) or json (every field)", "slack")
    webhook_timeout: float = option(dt.number(0.1), "seconds the webhook has to answer", 10.0)
    smtp_host: str = option(str, "SMTP server for alert mail (no mail when empty)", "")
    smtp_port: int = option(dt.port, "SMTP port", 25)
    smtp_starttls: bool = option(dt.boolean, "use STARTTLS", False)
    smtp_user: str = option(str, "SMTP user", "")
    smtp_password: str = option(str, "SMTP password", "")
    mail_from: str = option(str, "sender of alert mail", "loglines@localhost")
    mail_to: tuple[str, ...] = option(dt.string_list, "recipients of alert mail", ())
    es_down_for_s: float = option(dt.number(0), "Elasticsearch not answering this long is an alert", 60.0)
    process_down_for_s: float = option(dt.number(0), "a program BACKOFF, FATAL or EXITED this long", 60.0)
    queue_max_messages: int = option(dt.integer(0), "a queue holding more messages", 100_000)
    queue_growing_for_s: float = option(dt.number(0), "a queue growing this long (0: not checked)", 600.0)
    queue_growth_min: int = option(dt.integer(1), "... by at least this many messages", 1000)
    dead_letters_window_s: float = option(dt.number(1), "dead letters that grew within this many seconds", 3600.0)
    lag_max_bytes: int = option(dt.byte_size, "a watched file with more bytes not read", 100 * 1024 * 1024)
    lag_max_age_s: float = option(dt.number(0), "... or whose oldest unshipped line is older", 600.0)
    tracker_failing_for_s: float = option(dt.number(0), "a tracker answering only failures this long", 600.0)
    disk_min_free_bytes: int = option(dt.byte_size, "free space under var/ and the spools at least", 1024 ** 3)
    heartbeat_max_age_s: float = option(dt.number(1), "a worker whose loop has not turned this long", 300.0)


class Monitor:
    """The check loop (a thread) and the ASGI application serving what it found."""

    def __init__(self, cfg: Config, program: ProgramConfig[MonitorOptions], flags: Flags) -> None:
        self.cfg, self.opts, self.flags, self.name = cfg, program.options, flags, program.name
        self.clients = {rc.name: connect(rc) for rc in cfg.servers()}
        self.server = program.redis
        self.client, self.keys = self.clients[program.redis], Keys(cfg.redis_for(program).prefix)
        self.history = History(self.client, self.keys, self.opts.history_s, self.opts.sample_s)
        self.checker = Checker(cfg, self.opts, self.client, self.keys, self.history)
        self.notifier = Notifier(self.opts)
        self.alerts = Alerts(self.client, self.keys, self.opts, self.notifier)
        self.tokens = Tokens.load(Path(self.opts.tokens_file)) if self.opts.tokens_file else None
        password = cfg.supervisor.resolved_password()
        self.basic = f"{cfg.supervisor.username}:{password}".encode() if self.opts.console_auth and password else b""
        self.latest: tuple[float, dict[str, Any], list[Check], list[Alert]] | None = None
        self.rounds = 0
        self.offline: Check | None = None  # why the last round could not be done (its Redis failed)
        self.thread = threading.Thread(target=self.loop, name="checks", daemon=True)
        host = cfg.supervisor.host if cfg.supervisor.host not in ("0.0.0.0", "::") else "127.0.0.1"
        self.console_url = f"http://{host}:{cfg.supervisor.port}/"

    # -- the checks ---------------------------------------------------------------------

    def loop(self) -> None:
        next_sample = 0.0
        while not self.flags.stop:
            started = time.monotonic()
            try:
                next_sample = self.round(next_sample)
                self.offline = None
            except REDIS_ERRORS as exc:
                log.warning("%s: checks not done, Redis failed: %s", self.name, safe(exc))
                self.offline = Check(f"redis_unreachable:{self.server}", "redis_unreachable", False,
                                     f"Redis [{self.server}], which holds the monitor's state, failed "
                                     f"({type(exc).__name__}): {safe(exc)}")
                if "redis_unreachable" not in self.opts.disabled_rules:
                    self.alerts.offline(self.offline, time.time())
            sleep_unless(self.flags, self.opts.check_s - (time.monotonic() - started))

    def round(self, next_sample: float) -> float:
        """One round: collect, note sizes, sample, check, move the alerts on."""
        now = time.time()
        status = collect(self.cfg, self.clients)
        for name, w in status["workers"].items():
            if "files" in w:
                program = self.cfg.programs[name]
                figures.note_sizes(self.clients[program.redis], Keys(self.cfg.redis[program.redis].prefix),
                                   name, w["files"], now)
        if time.monotonic() >= next_sample:
            self.history.record(status, now)
            next_sample = time.monotonic() + self.opts.sample_s
        checks = self.checker.run(status, now)
        firing = self.alerts.evaluate(checks, now)
        self.latest, self.rounds = (now, status, checks, firing), self.rounds + 1
        self.client.set(self.keys.heartbeat(consumer_id(self.name)), b"%.3f" % now,
                        ex=max(30, int(self.opts.check_s * 3)))
        return next_sample

    # -- HTTP -----------------------------------------------------------------------------

    async def _startup(self) -> None:
        self.thread.start()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self._startup)
            return
        if scope["type"] != "http":
            return
        request = Request.of(scope, receive)
        try:
            await self.route(request, send)
        except HttpError as error:
            await answer_error(send, error)

    def allowed(self, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "")
        if self.basic and given[:6].lower() == "basic ":
            try:
                pair = base64.b64decode(given[6:].strip(), validate=True)
            except ValueError:
                return False
            return hmac.compare_digest(pair, self.basic)
        return self.tokens is not None and self.tokens.name_of(headers) is not None

    async def route(self, request: Request, send: Send) -> None:
        if not self.allowed(request.headers):  # first: nothing, not even a 404, answers unasked
            raise HttpError(401, "the console's user and password (or a token) are needed",
                            {"WWW-Authenticate": 'Basic realm="loglines monitor", charset="UTF-8"'})
        if request.path not in ("/", "/metrics", "/healthz"):
            raise HttpError(404, f"no such page: {request.path[:200]}")
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, f"{request.path} takes GET", {"Allow": "GET"})
        if request.path == "/metrics":
            # Prometheus' client: loaded by the one worker using it
            from pipeline.monitor import metrics

            body = await asyncio.to_thread(self.exposition)
            await answer(send, 200, body, metrics.CONTENT_TYPE)
        elif request.path == "/healthz":
            code, report = self.health()
            await answer_json(send, code, report)
        else:
            text = await asyncio.to_thread(self.page)
            await answer(send, 200, text.encode(), "text/html; charset=utf-8")

    def exposition(self) -> bytes:
        from pipeline.monitor import metrics

        status = collect(self.cfg, self.clients)
        return metrics.exposition(lambda: self.families(status))

    def families(self, status: dict[str, Any]) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from pipeline.monitor import metrics

        yield from metrics.families(status)
        checks = self.latest[2] if self.latest else []
        ok = GaugeMetricFamily("loglines_health_check_ok", "Whether every check of a rule passed at "
                               "the last round", labels=["rule"])
        firing = GaugeMetricFamily("loglines_alerts_firing", "Alerts firing, by rule", labels=["rule"])
        alerts = self.latest[3] if self.latest else []
        for rule in RULES:
            if rule not in self.opts.disabled_rules:
                ok.add_metric([rule], 0 if any(c.rule == rule and not c.ok for c in checks) else 1)
                firing.add_metric([rule], sum(1 for a in alerts if a.rule == rule))
        rounds = CounterMetricFamily("loglines_monitor_checks_total", "Rounds of checks done")
        rounds.add_metric([], self.rounds)
        last = GaugeMetricFamily("loglines_monitor_last_check_timestamp_seconds", "When the last round ended")
        last.add_metric([], self.latest[0] if self.latest else 0)
        told = CounterMetricFamily("loglines_monitor_notifications_total", "Alert messages, by channel "
                                   "and result", labels=["channel", "result"])
        for (channel, result), n in sorted(self.notifier.sent.items()):
            told.add_metric([channel, result], n)
        yield from (ok, firing, rounds, last, told)

    def health(self) -> tuple[int, dict[str, Any]]:
        if self.offline is not None:
            return 503, {"status": "failing", "failing": {self.offline.id: self.offline.summary}}
        if self.latest is None or time.time() - self.latest[0] > max(30.0, self.opts.check_s * 3):
            return 503, {"status": "failing", "failing": {"monitor": "no recent round of checks"}}
        at, _, checks, _ = self.latest
        failing = {c.id: c.summary for c in checks if not c.ok}
        return (503 if failing else 200), {"status": "failing" if failing else "ok", "failing": failing,
                                           "checks": len(checks), "checked_at": round(at, 3)}

    def page(self) -> str:
        if self.latest is None:
            return "<!doctype html><title>loglines</title><p>the first round of checks is under way"
        at, status, checks, firing = self.latest
        return page.render(status, checks, firing, self.history, self.console_url, at,
                           min(self.opts.history_s, 3600.0))


def run(cfg: Config, program: ProgramConfig[MonitorOptions], flags: Flags) -> int:
    monitor = Monitor(cfg, program, flags)
    log.info("%s: checks every %g s; alerts to %s", program.name, program.options.check_s,
             ", ".join(monitor.notifier.channels()) or "the log only")
    try:
        return serve(monitor, ServerSettings(program.options.listen, graceful_s=2.0), flags, reuse_port=False)
    finally:
        flags.stop = True
        if monitor.thread.is_alive():
            monitor.thread.join(timeout=10)


def prepare(values: dict[str, Any], section: Section) -> dict[str, Any]:
    resolve_paths(values, section, "tokens_file")
    if not values["console_auth"] and not values["tokens_file"]:
        raise section.error("nobody could get in: keep console_auth or set tokens_file", "console_auth", "no")
    if values["queue_growing_for_s"] > values["history_s"]:
        raise section.error(f"must be within history_s ({values['history_s']:g}): the samples it reads",
                            "queue_growing_for_s", str(values["queue_growing_for_s"]))
    return values


def check(cfg: Config, program: ProgramConfig[MonitorOptions]) -> list[str]:
    others = [n for n in cfg.workers("monitor") if n != program.name]
    return [f"[{program.name}] another monitor ({', '.join(others)}) alerts on the same pipeline: "
            "each alert would be sent twice"] if others else []


COMPONENT = Component(
    "monitor", "serves /metrics, /healthz and a status page; checks the pipeline and sends alerts",
    MonitorOptions, run, single_process=True, prepare=prepare, check=check)
