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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis

from pipeline.config import Config, ProgramConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core import message
from pipeline.core.connection import REDIS_ERRORS
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags, sleep_unless
from pipeline.core.logsetup import safe
from pipeline.core.queue import Consumer, Delivery, Outcome
from pipeline.core.retry import HandBack
from pipeline.core.worker import Handler, run_consumer
from pipeline.errors import ConfigError
from pipeline.registry import Component, Section
from pipeline.sinks.forwardtarget import Target, TargetDelivery, target_name, target_queue
from pipeline.sinks.spool import spooled

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
        if path.stem not in known and spooled(path) != 0:
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
