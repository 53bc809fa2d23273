"""The run loop every queue-consuming worker shares.

One loop: take a batch, handle it, acknowledge it. A stop request (SIGTERM/SIGINT) only sets a
flag; the loop finishes the batch in hand and leaves. A lost Redis means capped exponential
backoff. Anything unexpected propagates: the process exits non-zero, supervisord restarts it,
and the in-flight batch is recovered (and dead-lettered if it keeps killing workers).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from pipeline.config import Config, ProgramConfig
from pipeline.core import failpoint, message
from pipeline.core.connection import REDIS_ERRORS, connect, passing
from pipeline.core.lifecycle import Flags, Watchdog, last_turn_epoch, turned
from pipeline.core.queue import Consumer, Delivery, Lost, Outcome
from pipeline.core.reaper import reap
from pipeline.core.retry import HandBack, Outage

log = logging.getLogger(__name__)


def consumer_id(name: str) -> str:
    """Stable across restarts, distinct across hosts and supervisord process numbers."""
    return f"{socket.gethostname()}/{os.environ.get('SUPERVISOR_PROCESS_NAME') or name}"


def belongs_to(consumer: str, section: str) -> bool:
    """Whether a consumer id (``host/process``) is one of a section's processes (``section`` or,
    with numprocs, ``section_NN``)."""
    process = consumer.rsplit("/", 1)[-1]
    head, _, number = process.rpartition("_")
    return process == section or (head == section and number.isdigit())


class Heartbeat(threading.Thread):
    """Refreshes the heartbeat key while the process lives (even during a long batch)."""

    def __init__(self, consumer: Consumer, ttl: int, flags: Flags) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.consumer, self.interval, self.flags = consumer, max(1.0, ttl / 3), flags
        self.done = threading.Event()

    def run(self) -> None:
        marked = False
        next_beat = time.monotonic() + self.interval
        while not self.done.wait(0.2):
            try:
                if self.flags.stop and not marked:
                    self.consumer.mark_stopping()  # from here on a kill is a stop, not a crash
                    marked = True
                if time.monotonic() >= next_beat:
                    self.consumer.beat(last_turn_epoch())
                    next_beat = time.monotonic() + self.interval
            except REDIS_ERRORS as exc:  # never let the heartbeat die while the worker lives
                log.warning("heartbeat failed: %s", exc)


Handler = Callable[[Delivery], Outcome]
#: What waits for a delivery's outcome, once its work is started.
Finish = Callable[[], Outcome]
#: A handler that starts the work on a delivery and returns what waits for it, so that the loop
#: can take the next delivery and start it too meanwhile (the indexer's bulks in flight).
Starter = Callable[[Delivery], Finish]


def _at_once(handle: Handler) -> Starter:
    def start(delivery: Delivery) -> Finish:
        outcome = handle(delivery)
        return lambda: outcome

    return start


class _Later:
    """A handler's work on a delivery, done when first asked for, or ahead of that (while the
    acknowledgement of the delivery before is in Redis); what it raised, it raises when asked."""

    def __init__(self, handle: Handler, delivery: Delivery) -> None:
        self.handle, self.delivery = handle, delivery
        self.outcome: Outcome | None = None
        self.error: Exception | None = None

    def ahead(self) -> None:
        if self.outcome is None and self.error is None:
            try:
                self.outcome = self.handle(self.delivery)
            except Exception as exc:  # raised in turn, once the deliveries before are done
                self.error = exc

    def __call__(self) -> Outcome:
        self.ahead()
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


def undecodable(consumer: Consumer, delivery: Delivery) -> list[bytes]:
    """Dead-letter entries for the delivery's messages that are not JSON batches or items. The
    message is kept whole (it was in Redis already), so that it can be looked at and replayed."""
    return [
        message.dead_letter(reason=f"undecodable message: {error}", worker=consumer.id,
                            queue=consumer.queue, raw=raw, detail=f"{len(raw)} bytes")
        for raw, error in delivery.bad
    ]


def run_consumer(
    cfg: Config,
    program: ProgramConfig[Any],
    queue: str,
    make_handler: Callable[[Consumer, Flags], Handler] | None,
    flags: Flags | None = None,
    client: redis.Redis | None = None,
    tick: Callable[[], None] | None = None,
    gather_items: int = 0,
    linger: float = 0.0,
    make_starter: Callable[[Consumer, Flags], Starter] | None = None,
    in_flight: int = 1,
    work_ahead: bool = False,
) -> int:
    """The loop. With ``make_starter`` (instead of ``make_handler``) and ``in_flight`` above 1,
    that many deliveries are worked on at once: while the first is, the next ones queued are
    taken into the in-flight list behind it and started, and they are acknowledged one by one
    in the order taken (a crash or a reaper takes back all of them, as one delivery).
    ``work_ahead``, for a handler whose work has no effect but its outcome (the parser's): the
    delivery behind is handled while Redis applies the acknowledgement of the one before. A
    delivery is taken only when no work is in hand (one taken fresh is handled at once), so at a
    crash only the last in-flight message can have been in work: only it counts a recovery
    (:class:`pipeline.core.queue.Consumer`'s ``works_ahead``)."""
    flags = flags or Flags()
    rcfg = cfg.redis_for(program)
    client = client or connect(rcfg)
    work_ahead = work_ahead and make_starter is None
    consumer = Consumer(client, rcfg, queue, consumer_id(program.name), program.name, works_ahead=work_ahead)
    if make_starter is not None:
        start = make_starter(consumer, flags)
    else:
        assert make_handler is not None
        handle = make_handler(consumer, flags)
        if work_ahead:
            start, in_flight = (lambda delivery: _Later(handle, delivery)), 2
        else:
            start, in_flight = _at_once(handle), 1
    heartbeat = Heartbeat(consumer, rcfg.heartbeat_ttl, flags)
    watchdog = Watchdog(consumer.id, cfg.watchdog_s)
    watchdog.start()
    outage = Outage(consumer.id, flags, client)
    started = False
    next_reap = 0.0
    held: list[tuple[Delivery, Finish, float]] = []  # in the in-flight list's order
    log.info("%s: consuming %s", consumer.id, queue)

    def begin(delivery: Delivery) -> None:
        taken = time.monotonic()
        failpoint.hit("taken")
        held.append((delivery, start(delivery) if delivery.count else Outcome, taken))

    try:
        while not flags.stop or held:  # what is in hand is finished, a stop or not
            turned()
            try:
                if not started:
                    consumer.start()
                    if not heartbeat.is_alive():
                        heartbeat.start()
                    started = True
                try:
                    if not held and not flags.stop:
                        delivery = consumer.take(gather_items, linger)
                        if delivery is not None:
                            begin(delivery)
                            if work_ahead:  # done before anything is taken behind it
                                held[0][1]()
                    while held and len(held) < in_flight and not flags.stop:
                        more = consumer.take_ahead(gather_items)
                        if more is None:
                            break
                        begin(more)
                    if held:
                        delivery, finish, taken = held[0]
                        outcome = finish()
                        outcome.dead.extend(undecodable(consumer, delivery))
                        failpoint.hit("handled")
                        behind = sum(len(d.raws) for d, _, _ in held[1:])
                        later = held[1][1] if work_ahead and len(held) > 1 else None
                        # the next message comes with the acknowledgement, unless stopping or
                        # working on one behind (it is taken once that work is done: nothing is
                        # taken behind work in hand)
                        if consumer.ack(delivery, outcome, take_next=not flags.stop and not behind,
                                        behind=behind,
                                        meanwhile=later.ahead if isinstance(later, _Later) else None):
                            # taken to acknowledged, for the monitor
                            consumer.stats.observe("batch_seconds", time.monotonic() - taken)
                            del held[0]
                        else:
                            held.clear()  # reaped: those behind it are being done elsewhere too
                except HandBack:
                    consumer.hand_back()
                    log.info("%s: batch handed back to %s", consumer.id, queue)
                    break
                except Lost:
                    log.warning("%s: the batch in hand was reaped while this process was "
                                "paused; it is done elsewhere", consumer.id)
                    consumer.after_connection_error()
                    held.clear()
                    continue
                consumer.stats.flush()
                if tick is not None:
                    tick()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + rcfg.heartbeat_ttl / 2
                    reap(client, rcfg, me=consumer.id)
                outage.over()
            except REDIS_ERRORS as exc:
                consumer.after_connection_error()  # the next take finds out what is in flight
                held.clear()
                outage.wait(exc)
        if started:
            consumer.stats.flush(force=True)
            consumer.stop()
        log.info("%s: stopped", consumer.id)
        return 0
    except REDIS_ERRORS as exc:
        if not passing(exc):
            raise
        return 0
    finally:
        heartbeat.done.set()
        watchdog.done.set()
