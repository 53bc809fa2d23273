"""P2: parser lines/s per process (take -> plugin -> push -> acknowledge), one process."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import access_log, median_of, private_redis
from pipeline import plugin
from pipeline.config import RedisConfig
from pipeline.keys import Keys
from pipeline.options import ParserOptions, WatcherOptions
from pipeline.parser import make_processor
from pipeline.queue import Consumer
from pipeline.watcher import Watcher
from pipeline.worker import Flags


def fill(client, log: Path) -> int:  # type: ignore[no-untyped-def]
    """The access log as the watcher pushes it (the parser's real input)."""
    w = Watcher("fill", WatcherOptions(logfile=(str(log),), pushto="raw", servicename="bench"),
                client, Keys(), Flags())
    w.load_state()
    w.rescan(first=True)
    while w.pump():
        pass
    w.flush_due(force=True)
    for tail in w.tails.values():
        tail.close()
    return w.lines_pushed


def run_once(client, log: Path, plugin_name: str) -> float:  # type: ignore[no-untyped-def]
    client.flushall()
    count = fill(client, log)
    cfg = RedisConfig(embedded=False, url="redis://unused", block_timeout=0.1)
    consumer = Consumer(client, cfg, "raw", "bench/parser", "parser")
    consumer.start()
    loaded = plugin.load(plugin_name)
    process = make_processor(loaded, ParserOptions(listento="raw", pushto=("parsed",), plugin=plugin_name), "bench")
    done = 0
    started = time.perf_counter()
    while True:
        delivery = consumer.take()
        if delivery is None:
            break
        assert delivery.items is not None
        consumer.ack(delivery, process(delivery.items, "raw"))
        done += len(delivery.items)
    elapsed = time.perf_counter() - started
    assert done == count and client.llen("{loglines}:dlq") == 0
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--plugin", default="accesslog")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    log = access_log(work / "access.log", args.lines)
    server = private_redis(work / "redis")
    try:
        client = server.client()
        med, low, high = median_of(args.runs, lambda: run_once(client, log, args.plugin))
        print(f"parser ({args.plugin}): {med:,.0f} lines/s per process (median of {args.runs}, {low:,.0f}..{high:,.0f})")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
