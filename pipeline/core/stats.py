"""Throughput counters for ``loglines status`` and the monitor: best effort, flushed about once
a second.

They are statistics, not bookkeeping: kept out of the acknowledging transactions (which stay
small), and a crash may lose the last second of counts. Every worker's figures are fields of
one ``stats`` hash (summed over the section's processes):

- ``<worker>``: items acknowledged (what ``status`` shows as ITEMS);
- ``<worker>:<counter>``: a counter (a tracker's outcomes ``sent``, ..., ``items_out``);
- ``<worker>:<counter>:<label>``: one value of a counter's label (``es_rejected:429``);
- ``<worker>:<histogram>:le:<bound>`` and ``<worker>:<histogram>:sum_us``: a histogram of
  seconds, as the count in each bucket of :data:`BUCKETS` (not cumulative) and the sum in
  microseconds (the hash holds integers only).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

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

    def count(self, name: str, n: int = 1) -> None:
        """Add to one of this worker's counters (``name`` may end in ``:<label value>``)."""
        if n:
            self.outcomes[name] = self.outcomes.get(name, 0) + n

    def observe(self, name: str, seconds: float) -> None:
        """One observation of a histogram of seconds (a batch's handling time, a bulk request's)."""
        self.count(f"{name}:le:{bucket(seconds)}")
        self.count(f"{name}:sum_us", max(1, round(seconds * 1e6)))

    def flush(self, force: bool = False) -> None:
        if not (self.pending or self.outcomes) or (not force and time.monotonic() < self.next_flush):
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                self.write(pipe, self.pending, self.outcomes)
                pipe.execute()
        except REDIS_ERRORS:
            return
        self.pending = 0
        self.outcomes = {}
        self.next_flush = time.monotonic() + self.interval

    def take(self) -> tuple[int, dict[str, int]]:
        """What was counted since the last flush, forgotten here: for a worker that flushes
        through a pipeline of its own (an asyncio one) with :meth:`write`; what could not be
        written goes back with :meth:`add`."""
        taken = self.pending, self.outcomes
        self.pending, self.outcomes = 0, {}
        return taken

    def write(self, pipe: Any, pending: int, counts: Mapping[str, int]) -> None:
        """Queue the commands of a flush on ``pipe`` (sync or asyncio)."""
        rate_key = self.keys.rate(int(time.time() // 60))
        if pending:
            pipe.hincrby(self.keys.stats, self.worker, pending)
            pipe.hincrby(rate_key, self.worker, pending)
            pipe.expire(rate_key, 3600)
        for name, n in counts.items():
            pipe.hincrby(self.keys.stats, outcome_field(self.worker, name), n)


def outcome_field(worker: str, outcome: str) -> str:
    """The ``stats`` field counting one outcome of a worker."""
    return f"{worker}:{outcome}"


#: Upper bounds (seconds) of the buckets of every histogram loglines keeps.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def bucket(seconds: float) -> str:
    """The ``le`` of the bucket an observation falls in (``+Inf`` beyond the last)."""
    return next((f"{b:g}" for b in BUCKETS if seconds <= b), "+Inf")


def figures(totals: Mapping[str, int], worker: str) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """A worker's counters and histograms from the summed ``stats`` fields: counters by name
    (``items_out``, ``es_rejected:429``), histograms as ``{"buckets": [[le, cumulative count],
    ...], "count": n, "sum": seconds}``."""
    head = worker + ":"
    counters: dict[str, int] = {}
    seen: dict[str, dict[str, int]] = {}
    for field, value in totals.items():
        if not field.startswith(head):
            continue
        name = field[len(head):]
        hist, sep, bound = name.partition(":le:")
        if sep:
            seen.setdefault(hist, {})[bound] = seen.setdefault(hist, {}).get(bound, 0) + value
        elif name.endswith(":sum_us"):
            seen.setdefault(name[:-7], {})["sum_us"] = value
        else:
            counters[name] = value
    histograms: dict[str, dict[str, Any]] = {}
    for name, counts in seen.items():
        running, buckets = 0, []
        for le in [f"{b:g}" for b in BUCKETS] + ["+Inf"]:
            running += counts.get(le, 0)
            buckets.append([le, running])
        histograms[name] = {"buckets": buckets, "count": running, "sum": counts.get("sum_us", 0) / 1e6}
    return counters, histograms
