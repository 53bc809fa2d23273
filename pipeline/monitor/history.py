"""Samples the monitor keeps in Redis for the status page's charts and the growing-queue rule.

One capped list per series (``{prefix}:mon:series:<kind>:<name>``): each queue's length, each
worker's items counter (its throughput is the difference between two samples), the dead
letters. A sample is ``<unix time> <value>``; a list holds at most ``history_s / sample_s``
of them and expires when no longer sampled, so Redis holds a bounded amount whatever runs.
"""

from __future__ import annotations

import math
from typing import Any

import redis

from pipeline.core.keys import Keys
from pipeline.monitor.figures import MAX_SERIES


class History:
    def __init__(self, client: redis.Redis, keys: Keys, history_s: float, sample_s: float) -> None:
        self.client, self.keys = client, keys
        self.history_s, self.sample_s = history_s, sample_s
        self.points = max(2, math.ceil(history_s / sample_s) + 1)

    def record(self, status: dict[str, Any], now: float) -> None:
        """One sample of every series, in one round trip."""
        values: list[tuple[str, str, float]] = [("queue", q, n) for q, n in
                                                sorted(status["queues"].items(), key=lambda q: -q[1])[:MAX_SERIES]]
        values += [("items", w, s["items_total"]) for w, s in status["workers"].items() if s["type"] != "program"]
        values.append(("dead_letters", "all", status["dead_letters"]))
        with self.client.pipeline(transaction=False) as pipe:
            for kind, name, value in values:
                key = self.keys.monitor("series", kind, name)
                pipe.rpush(key, b"%.3f %d" % (now, value))
                pipe.ltrim(key, -self.points, -1)
                pipe.expire(key, int(self.history_s * 2) + 60)
            pipe.execute()

    def series(self, kind: str, name: str, since: float = 0.0) -> list[tuple[float, float]]:
        """(time, value) samples of a series, oldest first, from ``since`` on."""
        out = []
        for raw in self.client.lrange(self.keys.monitor("series", kind, name), 0, -1):
            t, _, v = raw.decode().partition(" ")
            if float(t) >= since:
                out.append((float(t), float(v)))
        return out

    def rates(self, worker: str, since: float = 0.0) -> list[tuple[float, float]]:
        """Items per second of a worker between its samples (a counter that went back, the
        stats being reset, counts from zero)."""
        points = self.series("items", worker, since)
        out = []
        for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
            if t1 > t0:
                out.append((t1, (v1 - v0 if v1 >= v0 else v1) / (t1 - t0)))
        return out
