"""Alerts: a check failing for its rule's time starts one; people are told once when it starts,
once when it resolves, and again every ``remind_s`` while it lasts; never once per check.

The state of every alert (pending since, firing since, when people were last told, which
channels still owe a message) is a field of one Redis hash, written at each check: a monitor
restarted in the middle of an alert neither repeats its first message nor forgets to resolve
it. Messages go to a webhook (Slack's incoming-webhook body ``{"text": ...}``, or a generic
JSON body) and to mail (the schedule worker's SMTP code and keys); a channel that fails is
tried again at the next check, for that message only.

When the monitor's own Redis does not answer, nothing can be read or written there: the alert
about it (``redis_unreachable``) is kept in the process (:meth:`Alerts.offline`) and merged into
the hash once Redis answers again, so that its end is told too; so is any round whose write
failed. A monitor restarted during such an outage starts that alert again.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import redis
import requests

from pipeline.core.connection import REDIS_ERRORS
from pipeline.core.keys import Keys
from pipeline.core.logsetup import safe
from pipeline.monitor.health import Check, for_seconds
from pipeline.ops.schedule import send_report

if TYPE_CHECKING:
    from pipeline.monitor.monitor import MonitorOptions

log = logging.getLogger(__name__)


@dataclass
class Alert:
    id: str
    rule: str
    summary: str
    since: float  # the check has failed since
    firing: bool = False
    fired_at: float = 0.0
    told_at: float = 0.0  # when the last message about it went out
    resolved: bool = False  # resolved; kept until every channel was told
    owed: dict[str, str] = field(default_factory=dict)  # channel -> message kind not sent yet

    @classmethod
    def loads(cls, raw: bytes) -> Alert:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True)
class Notice:
    kind: str  # firing, reminder, resolved
    alert: Alert
    host: str

    def text(self) -> str:
        head = {"firing": "FIRING", "reminder": "STILL FIRING", "resolved": "RESOLVED"}[self.kind]
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.alert.since))
        return f"[loglines {self.host}] {head} {self.alert.rule}: {self.alert.summary} (since {since})"

    def body(self, form: str) -> dict[str, Any]:
        if form == "slack":
            return {"text": self.text()}
        return {"status": self.kind, "alert": self.alert.id, "rule": self.alert.rule,
                "summary": self.alert.summary, "host": self.host,
                "since": _iso(self.alert.since), "at": _iso(time.time()), "text": self.text()}


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class Notifier:
    """The channels a monitor's section configures; ``send`` says whether the channel took it."""

    def __init__(self, opts: MonitorOptions) -> None:
        self.opts = opts
        self.session = requests.Session()
        self.session.trust_env = False
        self.sent: dict[tuple[str, str], int] = {}  # (channel, result) -> messages, for /metrics

    def channels(self) -> list[str]:
        return (["webhook"] if self.opts.webhook_url else []) + (
            ["mail"] if self.opts.smtp_host and self.opts.mail_to else [])

    def send(self, channel: str, notice: Notice) -> bool:
        try:
            if channel == "webhook":
                reply = self.session.post(self.opts.webhook_url, json=notice.body(self.opts.webhook_format),
                                          timeout=self.opts.webhook_timeout)
                if not 200 <= reply.status_code < 300:
                    raise OSError(f"the webhook answered {reply.status_code}")
            else:
                send_report(self.opts, notice.text()[:200], notice.text() + "\n")
            ok = True
        except (OSError, requests.RequestException, smtplib.SMTPException) as exc:
            log.warning("could not send the %s message of %s by %s: %s", notice.kind, notice.alert.id,
                        channel, safe(exc))
            ok = False
        result = "sent" if ok else "failed"
        self.sent[(channel, result)] = self.sent.get((channel, result), 0) + 1
        return ok


class Alerts:
    def __init__(self, client: redis.Redis, keys: Keys, opts: MonitorOptions, notifier: Notifier) -> None:
        self.client, self.key, self.opts, self.notifier = client, keys.monitor("alerts"), opts, notifier
        self.host = socket.gethostname()
        self.unsaved: dict[str, Alert] = {}  # moved on but not written: newer than the hash's

    def current(self) -> dict[str, Alert]:
        stored = {k.decode(): Alert.loads(v) for k, v in self.client.hgetall(self.key).items()}
        return {**stored, **self.unsaved}

    def offline(self, check: Check, now: float) -> None:
        """A round without the Redis the alerts live in: ``check`` (that Redis not answering)
        moves on in the process alone, every alert held here is told; the others wait."""
        self._failing(self.unsaved, check, now)
        for alert in self.unsaved.values():
            self._deliver(alert)

    def evaluate(self, checks: list[Check], now: float) -> list[Alert]:
        """Move every alert on by one round of checks; tell people what started, lasts past
        ``remind_s`` or ended; the alerts firing now."""
        alerts = self.current()
        failing = {c.id: c for c in checks if not c.ok}
        for check in failing.values():
            self._failing(alerts, check, now)
        for cid, alert in list(alerts.items()):
            if cid in failing or alert.resolved:
                continue
            if alert.firing:
                never_told = {ch for ch, kind in alert.owed.items() if kind == "firing"}
                alert.resolved, alert.owed = True, {}
                self._owe(alert, "resolved", now)
                for channel in never_told:  # it did not hear of the start: no end either
                    alert.owed.pop(channel, None)
            else:
                del alerts[cid]  # it never fired: nobody was told
        for alert in alerts.values():
            self._deliver(alert)
        done = [cid for cid, a in alerts.items() if a.resolved and not a.owed]
        live = {cid: a for cid, a in alerts.items() if cid not in done}
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(self.key)
                if live:
                    pipe.hset(self.key, mapping={cid: orjson.dumps(asdict(a)) for cid, a in live.items()})
                pipe.execute()
        except REDIS_ERRORS:
            # what was told stays told: the next round starts from this one (the ended alerts
            # too, or the hash's older copies would end them a second time)
            self.unsaved = alerts
            raise
        self.unsaved = {}
        return [a for a in alerts.values() if a.firing and not a.resolved]

    def _failing(self, alerts: dict[str, Alert], check: Check, now: float) -> None:
        """One more round of a failing check: it starts, fires after its rule's time, reminds."""
        alert = alerts.get(check.id)
        if alert is None or alert.resolved:
            alert = alerts[check.id] = Alert(check.id, check.rule, check.summary, now)
        alert.summary = check.summary
        if not alert.firing and now - alert.since >= for_seconds(self.opts, check.rule):
            alert.firing, alert.fired_at = True, now
            self._owe(alert, "firing", now)
        elif alert.firing and self.opts.remind_s and now - alert.told_at >= self.opts.remind_s and not alert.owed:
            self._owe(alert, "reminder", now)

    def _owe(self, alert: Alert, kind: str, now: float) -> None:
        alert.told_at = now
        (log.warning if kind != "resolved" else log.info)("%s", Notice(kind, alert, self.host).text())
        for channel in self.notifier.channels():
            alert.owed[channel] = kind

    def _deliver(self, alert: Alert) -> None:
        for channel, kind in list(alert.owed.items()):
            if self.notifier.send(channel, Notice(kind, alert, self.host)):
                del alert.owed[channel]
