"""Throughput counters for ``loglines status``: best effort, flushed about once a second.

They are statistics, not bookkeeping: kept out of the acknowledging transactions (which stay
small), and a crash may lose the last second of counts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis

from pipeline.core.connection import REDIS_ERRORS
from pipeline.core.keys import Keys


class Stats:
    """Items acknowledged per worker (``stats`` and per-minute ``rate`` hashes), and the worker's
    outcomes (what a tracker sent, did not count, ...) as ``<worker>:<outcome>`` fields of
    ``stats``: counted in memory, flushed together in one pipeline about once a second."""

    def __init__(self, client: redis.Redis, keys: Keys, worker: str, interval: float = 1.0) -> None:
        self.client, self.keys, self.worker, self.interval = client, keys, worker, interval
        self.pending = 0
        self.outcomes: dict[str, int] = {}
        self.next_flush = time.monotonic() + interval

    def add(self, count: int, outcomes: Mapping[str, int] | None = None) -> None:
        self.pending += count
        for name, n in (outcomes or {}).items():
            if n:
                self.outcomes[name] = self.outcomes.get(name, 0) + n

    def flush(self, force: bool = False) -> None:
        if not (self.pending or self.outcomes) or (not force and time.monotonic() < self.next_flush):
            return
        rate_key = self.keys.rate(int(time.time() // 60))
        try:
            with self.client.pipeline(transaction=False) as pipe:
                if self.pending:
                    pipe.hincrby(self.keys.stats, self.worker, self.pending)
                    pipe.hincrby(rate_key, self.worker, self.pending)
                    pipe.expire(rate_key, 3600)
                for name, n in self.outcomes.items():
                    pipe.hincrby(self.keys.stats, outcome_field(self.worker, name), n)
                pipe.execute()
        except REDIS_ERRORS:
            return
        self.pending = 0
        self.outcomes = {}
        self.next_flush = time.monotonic() + self.interval


def outcome_field(worker: str, outcome: str) -> str:
    """The ``stats`` field counting one outcome of a worker."""
    return f"{worker}:{outcome}"
