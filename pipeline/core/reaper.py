"""Return the in-flight batches of dead consumers to their queues.

A consumer is dead when its heartbeat key has expired. Each candidate is handled in a
WATCH/MULTI/EXEC on its heartbeat and in-flight list, so a consumer that comes back, or a
second reaper running at the same time, makes the transaction fail instead of moving a batch
twice. A live consumer's list is never touched. A batch recovered ``max_recoveries`` times goes
to the dead-letter list instead (each message that may have been in work when the consumer died
counts one recovery: :func:`pipeline.core.queue.blamed_from`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from pipeline.config import RedisConfig
from pipeline.core import message
from pipeline.core.keys import Keys
from pipeline.core.logsetup import safe
from pipeline.core.queue import blamed_from

log = logging.getLogger(__name__)


@dataclass
class ReapResult:
    requeued: int = 0
    dead_lettered: int = 0


def reap(client: redis.Redis, cfg: RedisConfig, me: str = "") -> ReapResult:
    keys = Keys(cfg.prefix)
    result = ReapResult()
    for raw_id, raw_queue in client.hgetall(keys.consumers).items():
        consumer = raw_id.decode("utf-8", "replace")
        if consumer == me:
            continue
        queue_key = raw_queue.decode("utf-8", "replace")
        outcome = _reap_one(client, cfg, keys, consumer, queue_key)
        if outcome == "requeued":
            result.requeued += 1
        elif outcome == "dead":
            result.dead_lettered += 1
    return result


def _reap_one(
    client: redis.Redis, cfg: RedisConfig, keys: Keys, consumer: str, queue_key: str
) -> str:
    inflight, heartbeat, stopping = keys.inflight(consumer), keys.heartbeat(consumer), keys.stopping(consumer)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(heartbeat, inflight, stopping)
            if pipe.exists(heartbeat):
                return "alive"
            raws = pipe.lrange(inflight, 0, -1)
            if not raws:
                return "idle"
            shas = [message.digest(raw) for raw in raws]
            stopped = bool(pipe.exists(stopping))  # killed on its way out: not the batch's fault
            first = blamed_from(len(raws), bool(pipe.sismember(keys.works_ahead, consumer)),
                                not pipe.sismember(keys.uncounted, consumer))
            counts = [int(pipe.hget(keys.recoveries, sha) or 0) + (0 if stopped or at < first else 1)
                      for at, sha in enumerate(shas)]
            pipe.multi()
            pipe.delete(inflight, stopping)
            outcome = "requeued"
            for raw, sha, count in reversed(list(zip(raws, shas, counts, strict=True))):
                if count >= cfg.max_recoveries:
                    reason = f"batch recovered {count} times from dead consumers; dead-lettered as poison"
                    pipe.rpush(keys.dead_letters, message.dead_letter(
                        reason=reason, worker=consumer, queue=keys.queue_name(queue_key), raw=raw))
                    pipe.hdel(keys.recoveries, sha)
                    outcome = "dead"
                else:
                    pipe.lpush(queue_key, raw)  # back to the head, in their order
                    if count:
                        pipe.hset(keys.recoveries, sha, count)
            pipe.execute()
    except redis.WatchError:
        return "raced"
    log.warning("reaper: %s %d message(s) of dead consumer %s (recovery %d)", outcome, len(raws),
                safe(consumer), max(counts))
    return outcome
