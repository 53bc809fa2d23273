"""The forwarder: ships batches to other loglines nodes over their HTTP ingest, exactly once.

One transaction copies every batch taken from ``listento`` into one queue per target, as a
batch with a stable id. Each target then has its own delivery (a thread, a consumer of its
queue, its own keep-alive session): a slow or dead target never holds back the others. A
batch is POSTed as NDJSON with its id as the ``Idempotency-Key``; the receiving node records
the key in the transaction that stores the events, so a batch sent again after a crash, a
timeout or a lost answer is stored once there.

While a target is down, its delivery retries with capped exponential backoff and jitter (at
most ``max_failover_duration`` between tries, at least what a 429/503's Retry-After asks);
its backlog stays in Redis up to ``queue_max_items`` batches, beyond which the oldest batches
spill, in order, to a disk spool (SQLite, WAL) bounded by ``spool_max_bytes``. When the
target answers again the spool is sent first, oldest first, then the queue. A full spool
either holds the backlog (``when_full = block``: the fan-out waits, nothing is dropped) or
drops its oldest batches (``drop_oldest``: counted and logged). A 4xx other than 408/429
dead-letters the batch with the answer.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
import requests

from pipeline.config import Config, ProgramConfig, RedisConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core import message
from pipeline.core.connection import REDIS_ERRORS, connect
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags, sleep_unless, turned
from pipeline.core.logsetup import safe
from pipeline.core.queue import Consumer, Delivery, Outcome
from pipeline.core.retry import Backoff, HandBack, Outage
from pipeline.core.worker import Handler, Heartbeat, consumer_id, run_consumer, undecodable
from pipeline.errors import ConfigError
from pipeline.registry import Component, Section
from pipeline.sinks.httpclient import redacted, retry_after
from pipeline.sinks.spool import Spool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardOptions:
    listento: str = option(dt.name, "queue the batches come from")
    targets: tuple[str, ...] = option(dt.string_list, "ingest URLs of other loglines nodes, each "
                                                      "optionally name=URL, comma-separated")
    tokens_file: str = option(dt.nonempty, "file of name:token lines, one per target name "
                                           "(a single line serves every target)")
    ca_certs: str = option(str, "CA bundle the targets' certificates are checked against", "")
    timeout: float = option(dt.number(0.1), "seconds to wait for a target's answer", 10.0)
    max_failover_duration: float = option(dt.number(1), "longest wait between tries, seconds", 60.0)
    spool_dir: str = option(str, "folder of the disk spools (default var/spool/<section>)", "")
    spool_max_bytes: int = option(dt.byte_size, "disk spool per target at most", 1024 * 1024 * 1024)
    queue_max_items: int = option(dt.integer(1), "batches a target's backlog keeps in Redis "
                                                 "before spilling to the spool", 10_000)
    when_full: str = option(dt.choice("block", "drop_oldest"), "what a full spool does", "block")


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    token: str


def parse_targets(opts: ForwardOptions) -> list[Target]:
    tokens: dict[str, str] = {}
    path = Path(opts.tokens_file)
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except OSError as exc:
        raise ConfigError(f"cannot read the tokens file {path}: {exc.strerror}") from None
    for line in lines:
        if line and not line.startswith("#"):
            name, sep, token = line.partition(":")
            tokens[name.strip() if sep else "*"] = (token if sep else name).strip()
    out = []
    for spec in opts.targets:
        name, sep, url = spec.partition("=")
        if not sep:
            name, url = target_name(spec), spec
        token = tokens.get(name.strip()) or tokens.get("*") or (next(iter(tokens.values())) if len(tokens) == 1 else "")
        if not token:
            raise ConfigError(f"the tokens file {path} has no token for target {name.strip()!r}")
        out.append(Target(name.strip(), url.strip(), token))
    return out


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


def spool_dir(cfg: Config, program: ProgramConfig[ForwardOptions]) -> Path:
    return Path(program.options.spool_dir) if program.options.spool_dir else cfg.var_dir / "spool" / program.name


def target_names(opts: ForwardOptions) -> list[str]:
    return [spec.partition("=")[0].strip() if "=" in spec else target_name(spec) for spec in opts.targets]


def stranded(cfg: Config, program: ProgramConfig[ForwardOptions], client: redis.Redis | None) -> dict[str, Any]:
    """Targets no longer in ``targets`` that still hold batches: name -> queue length (None
    when not asked, without Redis) and spool file. A target renamed (or, unnamed, given another
    port) is one of these: its backlog waits until a target of that name is back."""
    known, keys = set(target_names(program.options)), Keys(cfg.redis_for(program).prefix)
    out: dict[str, Any] = {}
    for path in sorted(spool_dir(cfg, program).glob("*.sqlite")):
        if path.stem not in known:
            out[path.stem] = {"queue": None, "spool": str(path)}
    if client is not None:
        head = keys.queue(target_queue(program.name, ""))
        for raw in client.scan_iter(match=head + "*", count=1000):  # a section's name has no glob character
            name = (raw.decode() if isinstance(raw, bytes) else str(raw))[len(head):]
            length = int(client.llen(keys.queue(target_queue(program.name, name))))
            if name not in known and length:
                out.setdefault(name, {"spool": ""})["queue"] = length
    return out


def check(cfg: Config, program: ProgramConfig[ForwardOptions]) -> list[str]:
    return [f"[{program.name}] target {name!r} is not in targets any more, but its spool {found['spool']} "
            "holds batches: add it back under that name to deliver them" for name, found in
            stranded(cfg, program, None).items()]


def run(cfg: Config, program: ProgramConfig[ForwardOptions], flags: Flags) -> int:
    opts = program.options
    rcfg = cfg.redis_for(program)
    deliveries = [TargetDelivery(program.name, t, opts, rcfg, spool_dir(cfg, program), flags)
                  for t in parse_targets(opts)]
    try:
        for name, found in stranded(cfg, program, deliveries[0].client).items():
            log.error("%s: target %s is not in targets any more but holds batches (queue: %s, spool: %s): "
                      "they wait until a target of that name is back", program.name, safe(name),
                      found["queue"] or 0, found["spool"] or "none")
    except REDIS_ERRORS:
        pass  # said on a later start; the deliveries wait for Redis anyway
    for delivery in deliveries:
        delivery.thread.start()

    def make_handler(consumer: Consumer, _flags: Flags) -> Handler:
        def handle(delivery: Delivery) -> Outcome:
            while any(d.full() for d in deliveries) and not flags.stop:  # when_full = block
                sleep_unless(flags, 1.0)
            if flags.stop:
                raise HandBack()
            payloads, bad = message.pack(delivery.items, consumer.cfg.message_bytes)
            batch = uuid.uuid4().hex
            pushes = []
            for n, payload in enumerate(payloads):
                wrapped = b'{"batch_id":"%s-%d","items":%s}' % (batch.encode(), n, payload)
                pushes += [(target_queue(program.name, d.target.name), wrapped) for d in deliveries]
            dead = [message.dead_letter(reason=f"the item {why}", worker=consumer.id, queue=opts.listento,
                                        item={"unencodable": repr(item)[:2000]}) for item, why in bad]
            return Outcome(pushes=pushes, dead=dead, count=len(delivery.items),
                           out=(len(delivery.items) - len(bad)) * len(deliveries))

        return handle

    try:
        return run_consumer(cfg, program, opts.listento, make_handler, flags)
    finally:
        flags.stop = True
        for delivery in deliveries:
            delivery.thread.join(timeout=max(1.0, program.stopwaitsecs - 5.0))


def status(cfg: Config, program: ProgramConfig[ForwardOptions], client: redis.Redis) -> dict[str, Any]:
    """Per target: state, queue length, spool size and the age of its oldest batch."""
    keys = Keys(cfg.redis_for(program).prefix)
    known = set(target_names(program.options))
    out: dict[str, Any] = {}
    for name, raw in client.hgetall(keys.forward(program.name)).items():
        if name.decode() not in known:
            continue  # a target gone from the config: below, when it still holds batches
        figures = orjson.loads(raw)
        figures["queue"] = int(client.llen(keys.queue(target_queue(program.name, name.decode()))))
        out[name.decode()] = figures
    for name, found in stranded(cfg, program, client).items():
        out[name] = {"state": "not in targets", "queue": found["queue"] or 0, "spool": found["spool"]}
    return {"targets": out}


def prepare(values: dict[str, Any], section: Section) -> dict[str, Any]:
    from pipeline.registry import resolve_paths

    resolve_paths(values, section, "tokens_file", "ca_certs", "spool_dir")
    if not values["targets"]:
        raise section.error("expected at least one ingest URL", "targets", "")
    names = []
    for spec in values["targets"]:
        name, sep, url = spec.partition("=")
        try:
            dt.http_url(url if sep else spec)
        except ValueError as exc:
            raise section.error(str(exc), "targets", spec) from None
        names.append(name.strip() if sep else target_name(spec))
    if len(set(names)) != len(names):
        raise section.error("two targets with one name", "targets", ", ".join(values["targets"]))
    return values


COMPONENT = Component(
    "forward", "ships batches to other loglines nodes over HTTP ingest, exactly once", ForwardOptions, run,
    single_process=True, reads=("listento",), prepare=prepare, blocking=("timeout",), status=status, check=check)
