"""Tracker forwarder events/s to a local tracker that answers at once, with and without ratelimit."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import median_of, private_redis, row
from bench.genlog import lines
from pipeline import config
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.core.queue import Consumer
from pipeline.sinks.tracker import Forwarder
from pipeline.transforms.robots import counter_robots
from tests.support.tracker_server import TrackerServer


def downloads(count: int) -> list[dict]:
    """``count`` lines the tracker sends: PDF downloads answered 200, by agents the COUNTER
    robots list does not name."""
    is_robot = counter_robots().is_robot
    out: list[dict] = []
    for n, text in enumerate(lines(count * 20, seed=5)):
        if '" 200 ' in text and "/bitstream/handle/" in text and ".pdf?" in text \
                and not is_robot(text.rsplit('"', 2)[-2]):
            out.append({"service": "bench", "logline": text, "src": "b", "off": n})
            if len(out) == count:
                break
    return out


def run_once(client, work: Path, tracker: TrackerServer, events: list[dict],  # type: ignore[no-untyped-def]
             ratelimit: float) -> float:
    client.flushall()
    before = len(tracker.accepted())
    url = tracker.url
    path = work / "loglines.cfg"
    path.write_text(f"[redis]\nurl = redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0\n"
                    f"[worker_irus]\ntype = tracker\nlistento = events\nplugin = repository\n"
                    f"endpoint_url = {url}\nratelimit = {ratelimit}\nopt_oai_host = bench.example\n")
    cfg = config.load(path)
    program = cfg.programs["worker_irus"]
    for i in range(0, len(events), 100):
        client.rpush(Keys().queue("events"), orjson.dumps(events[i:i + 100]))
    consumer = Consumer(client, cfg.redis["redis"], "events", "bench/tracker", "tracker")
    consumer.start()
    forwarder = Forwarder(cfg, program, consumer, Flags())
    started = time.perf_counter()
    handled = 0
    while handled < len(events):  # the clock stops with the last event, not after a last empty wait
        delivery = consumer.take()
        assert delivery is not None, f"the queue ran dry after {handled} of {len(events)} events"
        handled += delivery.count
        consumer.ack(delivery, forwarder.handle(delivery))
    elapsed = time.perf_counter() - started
    sent = len(tracker.accepted()) - before
    assert sent == len(events), f"the tracker took {sent} of {len(events)} events"
    return len(events) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    events = downloads(args.events)
    server = private_redis(work / "redis")
    try:
        with TrackerServer() as tracker:
            client = server.client()
            run_once(client, work, tracker, events[:50], 0.0)  # imports and connections made before the clock runs
            for ratelimit in (0.0, 0.005):
                med, low, high = median_of(args.runs, lambda r=ratelimit: run_once(client, work, tracker, events, r))
                print(f"tracker ratelimit={ratelimit}: {med:,.0f} events/s (median of {args.runs}, "
                      f"{low:,.0f}..{high:,.0f})")
                row(f"Tracker forwarder, ratelimit {ratelimit} (events/s, local tracker)", f"{med:,.0f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
