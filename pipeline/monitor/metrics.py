"""``/metrics`` of the monitor: the pipeline in the Prometheus exposition format.

Every figure comes from :func:`pipeline.monitor.status.collect` (the collector ``loglines
status`` reads too), turned into metric families by :func:`families`; the HTTP workers' request
counts and durations are made as their own ``/metrics`` makes them (all but the requests in
flight, which only the answering process knows); the monitor adds its own (checks and alerts).
Names follow Prometheus' conventions: ``loglines_`` prefix, counters ending in ``_total``,
seconds and bytes. Label values come from the config (worker, queue, target, supervisord process
names), from fixed sets (states, status codes or their class) or from the watched files' paths,
never from what flows through the pipeline (a log line, a client address); queues and files are
capped at :data:`~pipeline.monitor.figures.MAX_SERIES` series each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pipeline.core.httpstats import CONTENT_TYPE, request_families
from pipeline.monitor.figures import MAX_SERIES

__all__ = ["CONTENT_TYPE", "MAX_SERIES", "exposition", "families"]

#: supervisord's process states: ``loglines_process_state`` has one series per state
STATES = ("STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN")

#: counters of ``core.stats`` with one label: counter name -> (metric, help, label)
LABELLED = {
    "tracker_responses": ("loglines_tracker_responses", "Answers of the tracker, by HTTP status "
                          "(or its class; timeout, connection_error)", "status"),
    "es_rejected": ("loglines_elasticsearch_rejected_documents", "Documents Elasticsearch did not "
                    "take in a bulk request, by status (retried or dead-lettered)", "status"),
    "es_bulk_errors": ("loglines_elasticsearch_bulk_errors", "Bulk requests that failed whole, by "
                       "reason (connection, timeout, status)", "reason"),
}
#: histograms of ``core.stats``: name -> (metric, help)
HISTOGRAMS = {
    "batch_seconds": ("loglines_worker_batch_duration_seconds", "Time from taking a batch to its "
                      "acknowledgement (a watcher: its commit)"),
    "es_bulk_seconds": ("loglines_elasticsearch_bulk_duration_seconds", "Time of a bulk request "
                        "that Elasticsearch answered"),
}


def families(status: dict[str, Any]) -> Iterator[Metric]:
    """The metric families of one collected status."""
    yield from _queues(status)
    yield from _servers(status)
    yield from _workers(status)
    yield from _watchers(status)
    yield from _forwarders(status)


def _queues(status: dict[str, Any]) -> Iterator[Metric]:
    length = GaugeMetricFamily("loglines_queue_length", "Messages waiting in a queue", labels=["queue"])
    items = GaugeMetricFamily("loglines_queue_items", "Items in a queue's messages (estimated "
                              "beyond the first 1,000 messages)", labels=["queue"])
    flight = GaugeMetricFamily("loglines_queue_in_flight", "Messages taken from a queue by its "
                               "consumers and not acknowledged yet", labels=["queue"])
    consumers = GaugeMetricFamily("loglines_queue_consumers", "Live consumers of a queue", labels=["queue"])
    queues = sorted(status["queues"].items(), key=lambda q: -q[1])[:MAX_SERIES]
    per_queue: dict[str, list[int]] = {}
    for c in status["consumers"].values():
        counts = per_queue.setdefault(c["queue"], [0, 0])
        counts[0] += int(c["in_flight"])
        counts[1] += 1 if c["alive"] else 0
    for name, messages in queues:
        length.add_metric([name], messages)
        items.add_metric([name], status["queue_items"].get(name, {}).get("items", 0))
        flying, alive = per_queue.get(name, [0, 0])
        flight.add_metric([name], flying)
        consumers.add_metric([name], alive)
    yield from (length, items, flight, consumers)


def _servers(status: dict[str, Any]) -> Iterator[Metric]:
    up = GaugeMetricFamily("loglines_redis_up", "Whether a Redis server of the pipeline answers", labels=["redis"])
    dead = GaugeMetricFamily("loglines_dead_letters", "Entries in the dead-letter list", labels=["redis"])
    failed = GaugeMetricFamily("loglines_failed_requests", "Tracker events waiting in the "
                               "failed-requests list", labels=["redis"])
    for name, server in status["redis"].items():
        up.add_metric([name], 1 if server["reachable"] else 0)
        if server["reachable"]:
            dead.add_metric([name], server["dead_letters"])
            failed.add_metric([name], server["failed"])
    sup = GaugeMetricFamily("loglines_supervisord_up", "Whether supervisord answers")
    sup.add_metric([], 1 if status["supervisord"] == "running" else 0)
    state = GaugeMetricFamily("loglines_process_state", "supervisord's state of a process (1 for "
                              "the state it is in)", labels=["program", "process", "state"])
    for key, current in sorted(status.get("processes", {}).items()):
        program, _, process = key.partition(":")
        for name in STATES:
            state.add_metric([program, process, name], 1 if current == name else 0)
    yield from (up, dead, failed, sup, state)


def _workers(status: dict[str, Any]) -> Iterator[Metric]:
    into = CounterMetricFamily("loglines_worker_items_in_total", "Items a worker took and "
                               "acknowledged (a watcher: lines read and pushed)", labels=["worker", "type"])
    out = CounterMetricFamily("loglines_worker_items_out_total", "Items a worker passed on: pushed "
                              "to its queues (each copy) or delivered to its sink", labels=["worker", "type"])
    beat = GaugeMetricFamily("loglines_worker_heartbeat_age_seconds", "Since the loop of the "
                             "worker's least lively process last turned", labels=["worker", "type"])
    outcomes = CounterMetricFamily("loglines_worker_outcomes_total", "What became of a worker's "
                                   "items (a tracker's sent, not_counted, refused, parked)",
                                   labels=["worker", "outcome"])
    retrying = GaugeMetricFamily("loglines_tracker_retrying_events", "A tracker's events in the "
                                 "failed-requests list", labels=["worker"])
    labelled = {name: CounterMetricFamily(metric + "_total", doc, labels=["worker", label])
                for name, (metric, doc, label) in LABELLED.items()}
    hists = {name: HistogramMetricFamily(metric, doc, labels=["worker"])
             for name, (metric, doc) in HISTOGRAMS.items()}
    for name, w in status["workers"].items():
        if w["type"] == "program":
            continue
        into.add_metric([name, w["type"]], w["items_total"])
        out.add_metric([name, w["type"]], w.get("items_out_total", 0))
        if w.get("heartbeat_age_s") is not None:
            beat.add_metric([name, w["type"]], w["heartbeat_age_s"])
        for outcome, n in w.get("outcomes", {}).items():
            outcomes.add_metric([name, outcome], n)
        if "retrying" in w:
            retrying.add_metric([name], w["retrying"])
        for counter, n in w.get("counters", {}).items():
            head, _, value = counter.partition(":")
            if head in labelled and value:
                labelled[head].add_metric([name, value], n)
        for hist, h in w.get("histograms", {}).items():
            if hist in hists:
                hists[hist].add_metric([name], [(le, n) for le, n in h["buckets"]], h["sum"])
    yield from (into, out, beat, outcomes, retrying, *labelled.values(), *hists.values())
    yield from request_families((name, w.get("counters", {}), w.get("histograms", {}))
                                for name, w in status["workers"].items() if w["type"] != "program")


def _watchers(status: dict[str, Any]) -> Iterator[Metric]:
    lag = GaugeMetricFamily("loglines_watcher_lag_bytes", "Bytes of a watched file not read yet",
                            labels=["worker", "file"])
    age = GaugeMetricFamily("loglines_watcher_oldest_unshipped_age_seconds", "At least how long "
                            "the oldest line of a watched file not shipped yet has waited",
                            labels=["worker", "file"])
    waiting = GaugeMetricFamily("loglines_watcher_waiting_patterns", "logfile patterns that match "
                                "no file yet", labels=["worker"])
    for name, w in status["workers"].items():
        if "files" not in w:
            continue
        ages = w.get("unshipped_age_s", {})
        files = sorted(w["files"], key=lambda f: -(f["lag"] or 0))[:MAX_SERIES]
        for f in files:
            if f["lag"] is not None:
                lag.add_metric([name, f["path"]], f["lag"])
            if ages.get(f["path"]) is not None:
                age.add_metric([name, f["path"]], ages[f["path"]])
        waiting.add_metric([name], len(w.get("waiting_for", ())))
    yield from (lag, age, waiting)


def _forwarders(status: dict[str, Any]) -> Iterator[Metric]:
    labels = ["worker", "target"]
    up = GaugeMetricFamily("loglines_forward_target_up", "Whether a forwarder's target takes its "
                           "batches (state up)", labels=labels)
    gauges = {key: GaugeMetricFamily(metric, doc, labels=labels) for key, metric, doc in (
        ("queue", "loglines_forward_queue_batches", "Batches waiting in Redis for a target"),
        ("spool_batches", "loglines_forward_spool_batches", "Batches in a target's disk spool"),
        ("spool_bytes", "loglines_forward_spool_bytes", "Bytes in a target's disk spool"),
        ("spool_oldest_age_s", "loglines_forward_spool_oldest_age_seconds", "Age of the oldest "
         "batch in a target's spool"))}
    sent = CounterMetricFamily("loglines_forward_sent_batches_total", "Batches a target took "
                               "(since the forwarder started)", labels=labels)
    dropped = CounterMetricFamily("loglines_forward_dropped_batches_total", "Batches a full "
                                  "spool dropped (when_full = drop_oldest)", labels=labels)
    for name, w in status["workers"].items():
        for target, t in w.get("targets", {}).items():
            up.add_metric([name, target], 1 if t.get("state") == "up" else 0)
            for key, family in gauges.items():
                family.add_metric([name, target], float(t.get(key, 0)))
            sent.add_metric([name, target], float(t.get("sent", 0)))
            dropped.add_metric([name, target], float(t.get("dropped", 0)))
    yield from (up, *gauges.values(), sent, dropped)


class FamiliesCollector(Collector):
    """A prometheus_client collector whose families are made at each scrape."""

    def __init__(self, make: Callable[[], Iterator[Metric]]) -> None:
        self.make = make

    def collect(self) -> Iterator[Metric]:
        yield from self.make()


def exposition(make: Callable[[], Iterator[Metric]]) -> bytes:
    """The text exposition format of the families ``make`` gives."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FamiliesCollector(make))
    return generate_latest(registry)
