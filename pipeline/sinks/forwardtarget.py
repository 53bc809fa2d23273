"""One target of a forwarder: its delivery thread, its queue, its spool, its state.

Each target has its own consumer of its queue (``forward.<section>.<target>``), its own
keep-alive session and disk spool, so a slow or dead target never holds back the others. The
spool is sent first, oldest first, then the queue; while the target is down its backlog stays
in Redis up to ``queue_max_items`` batches and the oldest beyond spill to the spool, through a
list of the delivery's own (a crash in the middle is finished at start, never doubled).
Anything that fails outside Redis and HTTP (the spool's disk full, its file damaged) puts the
target in the state ``error``: it tries again with backoff, the other targets go on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import requests

from pipeline.config import RedisConfig
from pipeline.core import message
from pipeline.core.connection import REDIS_ERRORS, connect
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags, sleep_unless, turned
from pipeline.core.logsetup import safe
from pipeline.core.queue import Consumer, Delivery, Outcome
from pipeline.core.retry import Backoff, HandBack, Outage
from pipeline.core.worker import Heartbeat, consumer_id, undecodable
from pipeline.sinks.httpclient import redacted, retry_after
from pipeline.sinks.spool import Spool

if TYPE_CHECKING:
    from pipeline.sinks.forward import ForwardOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    token: str


class TargetDelivery:
    """One target's delivery: spool first, then its queue; retries; spills; its state."""

    def __init__(self, section: str, target: Target, opts: ForwardOptions, rcfg: RedisConfig,
                 spool_dir: Path, flags: Flags) -> None:
        self.section, self.target, self.opts, self.flags = section, target, opts, flags
        self.client = connect(rcfg)
        self.keys = Keys(rcfg.prefix)
        self.queue = target_queue(section, target.name)
        # a batch in flight here waits out the target's outage: a crash meanwhile (a power cut, the
        # OOM killer) is not the batch's doing, so its recoveries are never counted as poison
        self.consumer = Consumer(self.client, rcfg, self.queue, f"{consumer_id(section)}/{target.name}", section,
                                 counted=False)
        self.spill_key = self.keys.inflight(f"{self.consumer.id}/spill")
        self.spill_pending = True  # the spill list may hold batches a crash left there
        self.spool_path = spool_dir / f"{target.name}.sqlite"
        self._spool: Spool | None = None  # opened by the delivery's thread: a bad spool holds back this target alone
        self.error = ""  # what stopped the delivery last (its state is then "error")
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {target.token}", "User-Agent": "loglines-forward/1",
                                     "Content-Type": "application/x-ndjson"})
        self.session.verify = opts.ca_certs or True
        self.session.trust_env = False
        self.backoff = Backoff(base=0.5, cap=opts.max_failover_duration)
        self.failing = Backoff(base=1.0, cap=max(5.0, opts.max_failover_duration))  # waits after an error
        self.state, self.until, self.sent, self.next_publish = "up", 0.0, 0, 0.0
        self.heartbeat = Heartbeat(self.consumer, rcfg.heartbeat_ttl, flags)
        self.thread = threading.Thread(target=self.run, name=f"forward-{target.name}", daemon=True)

    # -- the loop -----------------------------------------------------------------------

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            self._spool = Spool(self.spool_path, self.opts.spool_max_bytes, self.opts.when_full == "drop_oldest")
        return self._spool

    def run(self) -> None:
        outage = Outage(f"{self.section}/{self.target.name}", self.flags, self.client)
        started = False
        while not self.flags.stop:
            turned()
            try:
                if not started:
                    self.consumer.start()
                    self.heartbeat.start()
                    started = True
                if self.spill_pending:
                    self._finish_spill()
                spooled = self.spool.oldest()
                if spooled is not None:
                    if self.send(spooled.batch_id, spooled.payload, from_spool=True):
                        self.spool.remove(spooled.seq)
                else:
                    delivery = self.consumer.take()
                    if delivery is not None:
                        self.deliver(delivery)
                self.spill()
                self.publish()
                outage.over()
                if self.error:
                    log.warning("%s: the delivery to %s goes on", self.section, safe(self.target.name))
                    self.error = ""
                    self.failing.reset()
                    if self.state == "error":
                        self.state = "up"
            except HandBack:
                self.consumer.hand_back()
                break
            except REDIS_ERRORS as exc:
                self.consumer.after_connection_error()
                outage.wait(exc)
            except Exception as exc:  # the spool's disk (full, unreadable), ...: this target waits, the others go on
                self._failed(exc)
        try:
            self.publish(force=True)
            self.consumer.stop()
        except REDIS_ERRORS:
            pass
        self.heartbeat.done.set()
        if self._spool is not None:
            self._spool.close()

    def _failed(self, exc: Exception) -> None:
        """Something other than Redis or the target failed: say so (in the log once, and in the
        state), wait, and take this target's own in-flight batch again (it was not sent, or is
        sent again under its key)."""
        why = safe(f"{type(exc).__name__}: {exc}", 300)
        if why != self.error:
            log.error("%s: the delivery to %s failed: %s; it tries again every %.0f s at most (the other "
                      "targets go on)", self.section, safe(self.target.name), why, self.failing.cap,
                      exc_info=exc)
        self.error, self.state = why, "error"
        self.consumer.after_connection_error()
        try:
            self.publish(force=True)
        except Exception:  # noqa: BLE001 - Redis or the spool may be what failed: the log has it
            pass
        sleep_unless(self.flags, self.failing.next_delay())

    def deliver(self, delivery: Delivery) -> None:
        dead = undecodable(self.consumer, delivery)
        bad = {raw for raw, _ in delivery.bad}
        for raw in delivery.raws:
            if raw in bad:
                continue
            item = orjson.loads(raw)  # decodable: it was decoded once already
            batch_id = str(item.get("batch_id", "")) if isinstance(item, dict) else ""
            if not batch_id:
                dead.append(message.dead_letter(reason="not a forwarder batch", worker=self.consumer.id,
                                                queue=self.queue, raw=raw))
                continue
            refused = self.send(batch_id, raw)
            if isinstance(refused, str):
                dead.append(message.dead_letter(reason=f"{self.target.name} refused the batch: {refused}",
                                                worker=self.consumer.id, queue=self.queue, raw=raw))
        self.consumer.ack(delivery, Outcome(dead=dead, count=delivery.count))

    def send(self, batch_id: str, payload: bytes, from_spool: bool = False) -> bool | str:
        """POST one batch until the target takes it: True; the answer when it refuses it for
        good (a 4xx other than 408/429: the batch is dead-lettered). A stop during the waits
        raises :class:`HandBack` (a spooled batch just stays in the spool)."""
        items = orjson.loads(payload).get("items", [])
        body = b"\n".join(orjson.dumps(item) for item in items)
        while True:
            try:
                reply = self.session.post(self.target.url, data=body, timeout=self.opts.timeout,
                                          headers={"Idempotency-Key": batch_id})
                if 200 <= reply.status_code < 300:
                    self.sent += 1
                    self.backoff.reset()
                    self.state = "up"
                    return True
                if 400 <= reply.status_code < 500 and reply.status_code not in (408, 429):
                    self.state = "up"
                    answer = f"HTTP {reply.status_code}: {reply.text[:500]}"
                    if from_spool:
                        self.client.rpush(self.keys.dead_letters, message.dead_letter(
                            reason=f"{self.target.name} refused the batch: {answer}", worker=self.consumer.id,
                            queue=self.queue, raw=payload))
                        return True  # out of the spool, into the dead letters
                    return answer
                reason, wait_at_least = f"HTTP {reply.status_code}", retry_after(reply.headers.get("Retry-After"))
            except requests.RequestException as exc:
                reason, wait_at_least = type(exc).__name__, 0.0
            delay = min(max(self.backoff.next_delay(), wait_at_least),
                        max(self.opts.max_failover_duration, wait_at_least))
            self.state, self.until = "backing off", time.time() + delay
            log.warning("%s: %s did not take batch %s (%s); next try in %.1fs", self.section,
                        safe(self.target.name), batch_id[:12], safe(reason), delay)
            self._wait(delay)
            if self.flags.stop:
                raise HandBack(reason)

    def _wait(self, seconds: float) -> None:
        """Wait between tries, spilling the growing backlog and saying how things stand."""
        deadline = time.monotonic() + seconds
        while not self.flags.stop and time.monotonic() < deadline:
            try:
                self.spill()
                self.publish()
            except REDIS_ERRORS:
                pass
            sleep_unless(self.flags, min(1.0, deadline - time.monotonic()))

    # -- the spool ----------------------------------------------------------------------

    def spill(self) -> None:
        """Move the oldest batches beyond ``queue_max_items`` from Redis to the spool: through
        a list of our own (a crash in between finishes the move at start, never doubles it)."""
        queue_key = self.keys.queue(self.queue)
        over = int(self.client.llen(queue_key)) - self.opts.queue_max_items
        while over > 0 and not self.flags.stop:
            heads = self.client.lrange(queue_key, 0, min(over, 100) - 1)
            fits, size = 0, 0
            for raw in heads:
                if not self.spool.room(size + len(raw)):
                    break
                fits, size = fits + 1, size + len(raw)
            if fits == 0:
                if self.state != "spool full":
                    log.warning("%s: the spool of %s is full (%d bytes): its backlog waits in Redis",
                                self.section, safe(self.target.name), self.spool.bytes)
                self.state = "spool full"
                return
            with self.client.pipeline(transaction=True) as pipe:
                for _ in range(fits):
                    pipe.lmove(queue_key, self.spill_key, "LEFT", "RIGHT")
                pipe.execute()
            self.spill_pending = True
            self._finish_spill()
            if self.state == "backing off":
                self.state = "spooling"
            over -= fits

    def _finish_spill(self) -> None:
        """Store what the spill list holds in the spool; what the spool has no room for (it
        shrank, or the queue's head changed meanwhile) goes back to the head of the queue."""
        raws = self.client.lrange(self.spill_key, 0, -1)
        if raws:
            batches = [(str(orjson.loads(raw).get("batch_id", "")), bytes(raw)) for raw in raws]
            stored, dropped = self.spool.add(batches)
            if dropped:
                log.error("%s: the spool of %s was full: dropped its %d oldest batch(es) (when_full = "
                          "drop_oldest)", self.section, safe(self.target.name), dropped)
            with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(self.spill_key)
                if stored < len(raws):
                    pipe.lpush(self.keys.queue(self.queue), *reversed(raws[stored:]))
                pipe.execute()
        self.spill_pending = False

    def full(self) -> bool:
        """Whether this target can take no more (block: the fan-out waits)."""
        return self.opts.when_full == "block" and self.state == "spool full"

    def publish(self, force: bool = False) -> None:
        if not force and time.monotonic() < self.next_publish:
            return
        self.next_publish = time.monotonic() + 1.0
        figures: dict[str, Any] = {"state": self.state, "url": redacted(self.target.url), "sent": self.sent}
        if self.error:
            figures["error"] = self.error
        else:
            figures.update(self.spool.figures())
        if self.state == "backing off":
            figures["until"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.until))
        self.client.hset(self.keys.forward(self.section), self.target.name, orjson.dumps(figures))


def target_name(url: str) -> str:
    """A target's name when the config gives none: its host and port."""
    return redacted(url).split("//", 1)[-1].split("/", 1)[0].replace(":", "_")


def target_queue(section: str, target: str) -> str:
    return f"forward.{section}.{target}"
