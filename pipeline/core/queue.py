"""Reliable consumption of a Redis list (the BRPOPLPUSH pattern, with BLMOVE).

A consumer moves one message at a time from its queue into its own in-flight list. When the
work is done, one atomic script (:data:`pipeline.core.ack.SCRIPT`) removes the message from the
in-flight list *and* pushes the results downstream (plus dead letters, and whatever the worker
adds, such as a file logger's committed size): after a crash a batch is either not done or
done, never half.

The script first checks that the in-flight list still holds exactly what this consumer took.
If a reaper took the batch back meanwhile (this consumer looked dead), the list was emptied,
so the acknowledgement is refused and the results are dropped, since the batch will be
processed again elsewhere. The same script may move the next message into the in-flight list
(a worker's loop asks for it): while the queue is busy, a batch costs one round trip. A
restarted consumer finishes its own in-flight batch first; each such recovery is counted per
message, and a message recovered ``max_recoveries`` times is dead-lettered instead (a poison
message must not crash workers forever). A consumer may gather several messages into its
in-flight list (the Elasticsearch indexer does, to make bulk requests of a useful size); they
are acknowledged, handed back or reaped together. It may also take the next delivery while one
is in hand (:meth:`Consumer.take_ahead`, the indexer's bulks in flight): its messages go into
the in-flight list behind, the deliveries are acknowledged in the order taken, each removing
its own messages from the head of the list, and a crash or a reaper takes them all back. An
acknowledgement's ``meanwhile`` is work done while Redis applies it (the parser handles the
delivery behind): the script is sent, the work done, then the reply read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from pipeline.config import RedisConfig
from pipeline.core import message
from pipeline.core.ack import Acknowledgement
from pipeline.core.connection import check_server, wait_replicas
from pipeline.core.keys import Keys
from pipeline.core.stats import Stats
from pipeline.errors import PayloadError

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """What a consumer took: one message, or several gathered into one bulk of work."""

    raws: list[bytes]  # the messages, in the order they sit in the in-flight list
    #: what every decodable message holds: items, and runs of lines as they travelled
    elements: list[message.Element] = field(default_factory=list)
    bad: list[tuple[bytes, str]] = field(default_factory=list)  # (message, why it is undecodable)
    recovered: int = 0  # times the first message was recovered from a dead consumer
    count: int = 0  # the items the elements stand for
    _items: list[message.Item] | None = field(default=None, repr=False)

    @property
    def raw(self) -> bytes:
        return self.raws[0]

    @property
    def items(self) -> list[message.Item]:
        """Every item, runs expanded (once, when first asked for)."""
        if self._items is None:
            self._items = message.expand(self.elements)
        return self._items

    def release(self) -> None:
        """Let the messages' bytes and decoded items go, keeping how many there were and the
        undecodable ones (their dead letters are made at the acknowledgement): for work that
        holds what it needs of them while it waits (a bulk request in flight)."""
        self.raws = [b""] * len(self.raws)
        self.elements, self._items = [], None


@dataclass
class Outcome:
    """What acknowledging a delivery does, all in one transaction."""

    pushes: list[tuple[str, bytes]] = field(default_factory=list)  # (queue name, message)
    dead: list[bytes] = field(default_factory=list)  # dead-letter entries
    count: int = 0  # items handled, for the stats
    #: more writes in the same transaction: (list key, value) appended to the list, and
    #: (hash key, field, value) set (a tracker's parked events, a file logger's committed size)
    appends: list[tuple[str, bytes]] = field(default_factory=list)
    sets: list[tuple[str, str, bytes]] = field(default_factory=list)
    #: what became of the items, counted for ``status`` once acknowledged (a tracker's sent,
    #: not counted, ...): statistics, outside the transaction
    tally: dict[str, int] = field(default_factory=dict)
    #: items passed on (pushed to the next queues, each copy counted, or delivered to the sink),
    #: counted as the worker's ``items_out`` once acknowledged; None: the worker does not say
    out: int | None = None


class Lost(Exception):
    """The delivery in hand is not this consumer's any more (a reaper took it back while the
    process was paused): drop it here, it is being done elsewhere."""


#: How long a "stopping" mark is kept for a process that was killed on its way out.
STOPPING_TTL = 7 * 86400

def blamed_from(count: int, works_ahead: bool, counted: bool = True) -> int:
    """The first of a dead consumer's ``count`` in-flight messages that counts a recovery (may
    have been in work when it died): every one, or for a consumer that works ahead the last
    alone (those before it were done, their acknowledgement on its way); none (``count``) for a
    consumer whose recoveries are not ``counted``."""
    if not counted:
        return count
    return max(count - 1, 0) if works_ahead else 0


class Consumer:
    def __init__(
        self,
        client: redis.Redis,
        cfg: RedisConfig,
        queue: str,
        consumer_id: str,
        worker: str,
        works_ahead: bool = False,
        counted: bool = True,
    ) -> None:
        self.client, self.cfg, self.queue, self.id, self.worker = client, cfg, queue, consumer_id, worker
        #: works on the delivery behind while the one before is acknowledged, and only so: a
        #: delivery taken fresh is worked on before anything is taken behind it, so of its
        #: in-flight messages only the last can be in work (the first ones are done)
        self.works_ahead = works_ahead
        #: False: its handling cannot kill its process, so a recovery of what it held is never
        #: held against the messages (no poison from a crash or a power cut during an outage)
        self.counted = counted
        self.keys = Keys(cfg.prefix)
        self.queue_key = self.keys.queue(queue)
        self.inflight_key = self.keys.inflight(consumer_id)
        self.heartbeat_key = self.keys.heartbeat(consumer_id)
        self.stats = Stats(client, self.keys, worker)
        self._first_take = True
        self._check_own = True
        self._next: bytes | None = None  # moved into the in-flight list by the last ack
        self._ack = Acknowledgement(client)

    def start(self) -> None:
        """Check the server, say we are alive, then register (a reaper never sees us registered
        but dead)."""
        for warning in check_server(self.client):
            log.warning("%s: %s", self.id, warning)
        self.beat()
        (self.client.sadd if self.works_ahead else self.client.srem)(self.keys.works_ahead, self.id)
        (self.client.srem if self.counted else self.client.sadd)(self.keys.uncounted, self.id)
        self.client.hset(self.keys.consumers, self.id, self.queue_key)

    def beat(self, last_turn: float | None = None) -> None:
        """Say we are alive; the value is when our loop last turned (a stuck loop shows)."""
        stamp = b"%.3f" % (time.time() if last_turn is None else last_turn)
        self.client.set(self.heartbeat_key, stamp, ex=self.cfg.heartbeat_ttl)

    def after_connection_error(self) -> None:
        """The reply to a BLMOVE may have been lost: look in the in-flight list again."""
        self._check_own = True
        self._next = None

    def take(self, gather_items: int = 0, linger: float = 0.0) -> Delivery | None:
        """The next work: our own in-flight messages first, else one from the queue (blocking).

        With ``gather_items``, more messages are moved into the in-flight list until that many
        items are in hand, so that small messages become one bulk: those already queued, and
        with ``linger`` also those that arrive within that many seconds. Without it, gathering
        stops as soon as the queue is empty: a batch never waits for work that is not there.
        """
        if self._check_own:
            raws = self.client.lrange(self.inflight_key, 0, -1)
            first, self._first_take, self._check_own = self._first_take, False, False
            self._next = None  # if there is one, it is in that list
            if raws:
                return self._recover(raws) if first else self._delivery(raws, 0)
        raw, self._next = self._next, None
        if raw is None:
            raw = self.client.blmove(
                self.queue_key, self.inflight_key, self.cfg.block_timeout, "LEFT", "RIGHT"
            )
        if raw is None:
            return None
        delivery = self._delivery([raw], 0)
        deadline = time.monotonic() + linger
        while gather_items and delivery.count < gather_items:
            more = self.client.lmove(self.queue_key, self.inflight_key, "LEFT", "RIGHT")
            if more is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                more = self.client.blmove(self.queue_key, self.inflight_key,
                                          min(left, self.cfg.block_timeout), "LEFT", "RIGHT")
                if more is None:
                    break
            self._add(delivery, more)
        return delivery

    def mark_stopping(self) -> None:
        """A stop was requested: should this process be killed before it hands its batch back
        (supervisord's SIGKILL after stopwaitsecs), the batch was not what killed it."""
        self.client.set(self.keys.stopping(self.id), b"1", ex=STOPPING_TTL)

    def _recover(self, raws: list[bytes]) -> Delivery | None:
        """A previous process died holding these: count the recovery (unless it had been asked
        to stop, so was killed rather than crashed), dead-letter poison."""
        if self.client.delete(self.keys.stopping(self.id)):
            log.warning("%s: taking back %d in-flight message(s) of a stopped process (no recovery "
                        "counted: it was killed, not crashed)", self.id, len(raws))
            return self._delivery(raws, 0)
        first = blamed_from(len(raws), self.works_ahead, self.counted)
        counts = [0] * first + [int(self.client.hincrby(self.keys.recoveries, message.digest(r), 1))
                                for r in raws[first:]]
        log.warning("recovering %d in-flight message(s) of %s (recovery %d)", len(raws), self.id, max(counts))
        poison = [r for r, n in zip(raws, counts, strict=True) if n >= self.cfg.max_recoveries]
        if poison:
            reason = f"batch recovered {max(counts)} times from a dying worker; dead-lettered as poison"
            log.error("%s: %s", self.id, reason)
            keep = [r for r, n in zip(raws, counts, strict=True) if n < self.cfg.max_recoveries]
            entries = [message.dead_letter(reason=reason, worker=self.id, queue=self.queue, raw=r) for r in poison]
            with self.client.pipeline(transaction=True) as pipe:  # poison out, the rest stays in flight
                pipe.delete(self.inflight_key)
                if keep:
                    pipe.rpush(self.inflight_key, *keep)
                pipe.rpush(self.keys.dead_letters, *entries)
                pipe.hdel(self.keys.recoveries, *[message.digest(r) for r in poison])
                pipe.execute()
            if not keep:
                return None
            raws = keep
        return self._delivery(raws, max(counts))

    def _delivery(self, raws: list[bytes], recovered: int) -> Delivery:
        delivery = Delivery([], recovered=recovered)
        for raw in raws:
            self._add(delivery, raw)
        return delivery

    def _add(self, delivery: Delivery, raw: bytes) -> None:
        delivery.raws.append(raw)
        try:
            elements = message.decode_elements(raw, self.cfg.max_payload_bytes)
            delivery.elements += elements
            delivery.count += message.size(elements)
            delivery._items = None
        except PayloadError as exc:
            delivery.bad.append((raw, str(exc)))

    def take_ahead(self, gather_items: int = 0) -> Delivery | None:
        """While the deliveries in hand are worked on, the next work queued (never waiting for
        any): moved into the in-flight list behind them, to be acknowledged after them (in the
        order taken: :meth:`ack` with ``behind``). None when nothing is queued, or when what the
        in-flight list holds is not known (after a connection error: :meth:`take` finds out)."""
        if self._check_own or self._next is not None:
            return None
        delivery: Delivery | None = None
        while delivery is None or (gather_items and delivery.count < gather_items):
            raw = self.client.lmove(self.queue_key, self.inflight_key, "LEFT", "RIGHT")
            if raw is None:
                break
            if delivery is None:
                delivery = Delivery([])
            self._add(delivery, raw)
        return delivery

    def ack(self, delivery: Delivery, outcome: Outcome, take_next: bool = False, behind: int = 0,
            meanwhile: Callable[[], object] | None = None) -> bool:
        """Commit a delivery's outcome; False if it was no longer ours (already done, or reaped).
        With ``take_next``, the same script moves the next message of the queue into the
        in-flight list, for the next :meth:`take` (a stopping consumer hands it back).
        ``behind``: the messages taken after this delivery (:meth:`take_ahead`) and still being
        worked on; they stay in the in-flight list, and the list must hold all of them too.
        ``meanwhile``: work done once the script is sent and before its reply is read (the
        parser's on the delivery behind; it must not use this consumer).

        Until an acknowledgement is known to have gone through, the next take looks in the
        in-flight list first: what is still there is delivered again, never overwritten.
        """
        assert not (take_next and behind), "the next message would go behind those still in hand"
        keys = self.keys
        appends = [(keys.queue(queue), payload) for queue, payload in outcome.pushes]
        appends += [(keys.dead_letters, entry) for entry in outcome.dead]
        appends += outcome.appends
        self._check_own = True
        self._next = None
        reply = self._ack(
            [self.inflight_key, keys.recoveries, self.queue_key, *(k for k, _ in appends),
             *(k for k, _, _ in outcome.sets)],
            [len(delivery.raws) + behind, len(delivery.raws), int(take_next), len(appends),
             len(outcome.sets), *(v for _, v in appends), *(x for _, f, v in outcome.sets for x in (f, v))],
            meanwhile)
        if reply is None:
            # only this consumer adds to its list, so it holds this delivery whole or was reaped
            # (emptied) since a part of it was taken: then a part may be done elsewhere
            log.warning("%s: in-flight batch already acknowledged or reaped; results dropped", self.id)
            return False
        wait_replicas(self.client, self.cfg)  # until then it is not done: it is looked at again
        self._check_own = False
        if len(reply) > 1:
            self._next = reply[1]
        self.stats.add(outcome.count, outcome.tally)
        if outcome.out is not None:
            self.stats.count("items_out", outcome.out)
        return True

    def owns(self, delivery: Delivery) -> bool:
        """Whether the in-flight list still holds this delivery whole (only this consumer adds
        to it, so if not, a reaper emptied it: the batch is being done elsewhere)."""
        return int(self.client.llen(self.inflight_key)) == len(delivery.raws)

    def hand_back(self) -> bool:
        """Return the in-flight messages to the head of the queue, in order (graceful stop)."""
        moved = False
        while self.client.lmove(self.inflight_key, self.queue_key, "RIGHT", "LEFT") is not None:
            moved = True
        return moved

    def stop(self) -> None:
        """Leave cleanly: the message the last ack took goes back, then no heartbeat (our
        in-flight list is empty or handed back)."""
        if self._next is not None:
            self.hand_back()
            self._next = None
        self.client.delete(self.heartbeat_key, self.keys.stopping(self.id))
