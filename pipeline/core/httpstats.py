"""Request metrics of the HTTP workers (ingest, api), answered on their ``GET /metrics``.

A request is counted by endpoint, method and status code, and its duration observed, when its
answer is done (:meth:`RequestStats.counting`). The endpoint is what the worker names: a route
template (``/v1/events/{id}``) and never the path asked for, ``other`` for a path no route
answers; the method is one of :data:`METHODS` or ``other``; so every label value comes from a
fixed set, never from a client (an address, a query string, an id).

Counting is in memory; the counts are added to the ``stats`` hash about once a second
(:mod:`pipeline.core.stats`), summed there over the section's ``numprocs`` processes. The
processes share one port, so a scrape reaches any one of them: it flushes its own counts and
answers the section's totals (every other process's as of its last flush). Only the requests in
flight are the answering process's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pipeline.core.connection import REDIS_ERRORS
from pipeline.core.http import HttpError, Message, Send
from pipeline.core.keys import Keys
from pipeline.core.logsetup import safe
from pipeline.core.stats import Stats
from pipeline.core.worker import consumer_id

if TYPE_CHECKING:  # Prometheus' client is loaded at the first scrape
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

log = logging.getLogger(__name__)

#: the values of the ``method`` label besides ``other``
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
FLUSH_S = 1.0
#: the Content-Type of a ``/metrics`` answer (Prometheus' text format)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LAST_FLUSH_S = 2.0


class RequestStats:
    """One HTTP worker process's request counts, flushed through an asyncio Redis client of the
    worker's (:meth:`start`); its other counters (an ingest's events) go through :attr:`stats`."""

    def __init__(self, worker: str, keys: Keys) -> None:
        self.worker, self.keys = worker, keys
        self.stats = Stats(None, keys, worker)  # no client of its own: flushed by :meth:`flush`
        self.in_flight = 0
        self.client: Any = None  # redis.asyncio.Redis (or its Sentinel or Cluster form)
        self.failing = False
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()

    @contextlib.contextmanager
    def counting(self, send: Send, endpoint: str, method: str) -> Iterator[Send]:
        """``send`` for one request, noting the status it answers; the request is counted when
        the block ends, however it ends (status 0: no answer was started)."""
        status = [0]
        started = time.monotonic()

        async def noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        self.in_flight += 1
        try:
            yield noted
        finally:
            self.in_flight -= 1
            verb = method if method in METHODS else "other"
            self.stats.count(f"http_requests:{endpoint}:{verb}:{status[0]}")
            self.stats.observe(f"http_request_seconds:{endpoint}", time.monotonic() - started)

    def start(self, client: Any) -> None:
        """Flush through ``client`` about once a second from now on (the caller closes it)."""
        self.client = client
        self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def stop(self) -> None:
        """The last flush, best effort and within :data:`LAST_FLUSH_S` (the graceful stop leaves
        a worker 5 s after its connections): a Redis that does not answer loses the last second."""
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(TimeoutError, *REDIS_ERRORS):
            async with asyncio.timeout(LAST_FLUSH_S):
                await self.flush()

    async def flush(self) -> None:
        """Add what was counted to ``stats``; what Redis does not take is kept for the next flush.
        One flush at a time: a scrape's waits for the running one, then reads what both wrote."""
        async with self._flushing:
            if self.client is None or not (self.stats.pending or self.stats.outcomes):
                return
            pending, counts = self.stats.take()
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    self.stats.write(pipe, pending, counts)
                    await pipe.execute()
            except REDIS_ERRORS:
                self.stats.add(pending, counts)
                raise

    async def _flush_loop(self) -> None:
        """Flush, and say the process's event loop turns: a heartbeat of the worker (what the
        monitor's heartbeat age and ``heartbeat_stale`` read), gone 30 s after the last."""
        beat = self.keys.heartbeat(f"{consumer_id(self.worker)}/loop")
        while True:
            try:
                await self.client.set(beat, b"%.3f" % time.time(), ex=30)
                await self.flush()
            except REDIS_ERRORS as exc:
                if not self.failing:
                    log.warning("%s: the request metrics are kept in memory until Redis takes them: %s",
                                self.worker, safe(exc))
                self.failing = True
            else:
                if self.failing:
                    log.info("%s: Redis takes the request metrics again", self.worker)
                self.failing = False
            await asyncio.sleep(FLUSH_S)

    async def totals(self) -> dict[str, int]:
        """For ``/metrics``: this process's counts flushed, then the ``stats`` hash (every
        worker's summed fields), or a 503 when Redis does not answer."""
        try:
            await self.flush()
            fields = await self.client.hgetall(self.keys.stats)
        except REDIS_ERRORS:
            raise HttpError(503, "Redis does not answer: the metrics are kept there", {"Retry-After": "2"}) from None
        return {k.decode(): int(v) for k, v in fields.items()}

    def families(self, counters: Mapping[str, int], histograms: Mapping[str, dict[str, Any]]) -> Iterator[Metric]:
        """The request families from the worker's figures (:func:`pipeline.core.stats.figures`
        of :meth:`totals`), made while a scrape is answered."""
        from prometheus_client.core import GaugeMetricFamily

        yield from request_families([(self.worker, counters, histograms)])
        flying = GaugeMetricFamily("loglines_http_requests_in_flight", "Requests being answered by the "
                                   "process that answers this scrape (the scrape not included)", labels=["worker"])
        flying.add_metric([self.worker], self.in_flight - 1)
        yield flying


def request_families(workers: Iterable[tuple[str, Mapping[str, int], Mapping[str, dict[str, Any]]]]
                     ) -> tuple[CounterMetricFamily, HistogramMetricFamily]:
    """The request counts and durations of HTTP workers, from each one's figures (name, counters,
    histograms): an HTTP worker's own ``/metrics`` and the monitor's make them the same way."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    requests = CounterMetricFamily("loglines_http_requests_total", "Requests answered, by endpoint "
                                   "(route template), method and status",
                                   labels=["worker", "endpoint", "method", "status"])
    duration = HistogramMetricFamily("loglines_http_request_duration_seconds", "Time from a "
                                     "request's arrival to the end of its answer", labels=["worker", "endpoint"])
    for worker, counters, histograms in workers:
        for name, n in sorted(counters.items()):
            head, _, rest = name.partition(":")
            if head == "http_requests" and rest.count(":") == 2:
                requests.add_metric([worker, *rest.split(":")], n)
        for name, h in sorted(histograms.items()):
            head, _, endpoint = name.partition(":")
            if head == "http_request_seconds":
                duration.add_metric([worker, endpoint], [(le, n) for le, n in h["buckets"]], h["sum"])
    return requests, duration
