"""Reliable consumption of a Redis list (the BRPOPLPUSH pattern, with BLMOVE).

A consumer moves one message at a time from its queue into its own in-flight list. When the
work is done, one MULTI/EXEC removes the message from the in-flight list *and* pushes the
results downstream (plus dead letters, stats, and whatever the worker adds, such as a file
logger's committed size): after a crash a batch is either not done or done, never half.

The acknowledgement WATCHes the in-flight list: if a reaper took the batch back meanwhile
(this consumer looked dead), the transaction is refused and the results are dropped, since the
batch will be processed again elsewhere. A restarted consumer finishes its own in-flight batch
first; each such recovery is counted per batch, and a batch recovered ``max_recoveries`` times
is dead-lettered instead (a poison message must not crash workers forever).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.client import Pipeline

from pipeline import message
from pipeline.config import RedisConfig
from pipeline.errors import PayloadError
from pipeline.keys import Keys
from pipeline.stats import Stats

log = logging.getLogger(__name__)

MIN_REDIS = (6, 2, 0)


@dataclass
class Delivery:
    raw: bytes
    items: list[message.Item] | None  # None: the message could not be decoded
    error: str = ""
    recovered: int = 0  # how many times this batch was recovered from a dead consumer


@dataclass
class Outcome:
    """What acknowledging a delivery does, all in one transaction."""

    pushes: list[tuple[str, bytes]] = field(default_factory=list)  # (queue name, message)
    dead: list[bytes] = field(default_factory=list)  # dead-letter entries
    count: int = 0  # items handled, for the stats
    extra: Callable[[Pipeline], None] | None = None  # more commands in the same MULTI


class Consumer:
    def __init__(
        self,
        client: redis.Redis,
        cfg: RedisConfig,
        queue: str,
        consumer_id: str,
        worker: str,
    ) -> None:
        self.client, self.cfg, self.queue, self.id, self.worker = client, cfg, queue, consumer_id, worker
        self.keys = Keys(cfg.prefix)
        self.queue_key = self.keys.queue(queue)
        self.inflight_key = self.keys.inflight(consumer_id)
        self.heartbeat_key = self.keys.heartbeat(consumer_id)
        self.stats = Stats(client, self.keys, worker)
        self._first_take = True
        self._check_own = True

    def start(self) -> None:
        """Say we are alive, then register (a reaper never sees us registered but dead)."""
        version = tuple(int(p) for p in str(self.client.info("server")["redis_version"]).split(".")[:3])
        if version < MIN_REDIS:
            raise RuntimeError(f"Redis {'.'.join(map(str, version))} is too old: BLMOVE needs 6.2")
        self.beat()
        self.client.hset(self.keys.consumers, self.id, self.queue_key)

    def beat(self) -> None:
        self.client.set(self.heartbeat_key, b"1", ex=self.cfg.heartbeat_ttl)

    def after_connection_error(self) -> None:
        """The reply to a BLMOVE may have been lost: look in the in-flight list again."""
        self._check_own = True

    def take(self) -> Delivery | None:
        """The next message: our own in-flight one first, else one from the queue (blocking)."""
        if self._check_own:
            raw = self.client.lindex(self.inflight_key, 0)
            first, self._first_take, self._check_own = self._first_take, False, False
            if raw is not None:
                recovered = 0
                if first:  # a previous process died holding it
                    recovered = int(self.client.hincrby(self.keys.recoveries, message.digest(raw), 1))
                    log.warning("recovering in-flight batch of %s (recovery %d)", self.id, recovered)
                    if recovered >= self.cfg.max_recoveries:
                        self._poison(raw, recovered)
                        return None
                return self._delivery(raw, recovered)
        raw = self.client.blmove(
            self.queue_key, self.inflight_key, self.cfg.block_timeout, "LEFT", "RIGHT"
        )
        return None if raw is None else self._delivery(raw, 0)

    def _delivery(self, raw: bytes, recovered: int) -> Delivery:
        try:
            return Delivery(raw, message.decode(raw, self.cfg.max_payload_bytes), "", recovered)
        except PayloadError as exc:
            return Delivery(raw, None, str(exc), recovered)

    def _poison(self, raw: bytes, recovered: int) -> None:
        reason = f"batch recovered {recovered} times from a dying worker; dead-lettered as poison"
        log.error("%s: %s", self.id, reason)
        entry = message.dead_letter(reason=reason, worker=self.id, queue=self.queue, raw=raw)
        self.ack(Delivery(raw, None, reason, recovered), Outcome(dead=[entry]))

    def ack(self, delivery: Delivery, outcome: Outcome) -> bool:
        """Commit a delivery's outcome; False if it was no longer ours (already done, or reaped)."""
        sha = message.digest(delivery.raw)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.watch(self.inflight_key)
                if pipe.llen(self.inflight_key) == 0:
                    log.warning("%s: in-flight batch already acknowledged or reaped; results dropped", self.id)
                    return False
                pipe.multi()
                pipe.lpop(self.inflight_key)
                for queue, payload in outcome.pushes:
                    pipe.rpush(self.keys.queue(queue), payload)
                for entry in outcome.dead:
                    pipe.rpush(self.keys.dead_letters, entry)
                pipe.hdel(self.keys.recoveries, sha)
                if outcome.extra is not None:
                    outcome.extra(pipe)
                pipe.execute()
                self.stats.add(outcome.count)
                return True
        except redis.WatchError:
            log.warning("%s: in-flight batch was reaped while we worked; results dropped", self.id)
            return False

    def hand_back(self) -> bool:
        """Return the in-flight batch to the head of its queue (graceful stop mid-batch)."""
        moved = self.client.lmove(self.inflight_key, self.queue_key, "LEFT", "LEFT")
        return moved is not None

    def stop(self) -> None:
        """Leave cleanly: no heartbeat (our in-flight list is empty or handed back)."""
        self.client.delete(self.heartbeat_key)
