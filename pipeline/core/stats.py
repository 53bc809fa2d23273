"""Throughput counters for ``loglines status``: best effort, flushed about once a second.

They are statistics, not bookkeeping: kept out of the acknowledging transactions (which stay
small), and a crash may lose the last second of counts.
"""

from __future__ import annotations

import time

import redis

from pipeline.core.connection import REDIS_ERRORS
from pipeline.core.keys import Keys


class Stats:
    def __init__(self, client: redis.Redis, keys: Keys, worker: str, interval: float = 1.0) -> None:
        self.client, self.keys, self.worker, self.interval = client, keys, worker, interval
        self.pending = 0
        self.next_flush = time.monotonic() + interval

    def add(self, count: int) -> None:
        self.pending += count

    def flush(self, force: bool = False) -> None:
        if not self.pending or (not force and time.monotonic() < self.next_flush):
            return
        rate_key = self.keys.rate(int(time.time() // 60))
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(self.keys.stats, self.worker, self.pending)
                pipe.hincrby(rate_key, self.worker, self.pending)
                pipe.expire(rate_key, 3600)
                pipe.execute()
        except REDIS_ERRORS:
            return
        self.pending = 0
        self.next_flush = time.monotonic() + self.interval
