"""P2: parser lines/s per process (take -> plugin -> push -> acknowledge), one process."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import push_file, row, run_with_redis
from pipeline import plugin
from pipeline.config import RedisConfig
from pipeline.core.queue import Consumer
from pipeline.transforms.parser import ParserOptions, make_processor


def run_once(client, log: Path, plugin_name: str) -> float:  # type: ignore[no-untyped-def]
    client.flushall()
    count = push_file(client, log)  # the parser's real input
    cfg = RedisConfig(embedded=False, url="redis://unused", block_timeout=0.1)
    consumer = Consumer(client, cfg, "raw", "bench/parser", "parser")
    consumer.start()
    opts = ParserOptions(listento="raw", pushto=("parsed",), plugin=plugin_name)
    options = {"timezone": "Europe/Prague"} if plugin_name == "kontext" else None
    process = make_processor(plugin.load(plugin_name, options=options), opts, "bench")
    done = 0
    started = time.perf_counter()
    while (delivery := consumer.take()) is not None:
        consumer.ack(delivery, process(delivery.elements, "raw"), take_next=True)
        done += delivery.count
    elapsed = time.perf_counter() - started
    assert done == count and client.llen("{loglines}:dlq") == 0
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--plugin", default="accesslog,kontext", help="comma-separated")
    args = parser.parse_args()
    for name in args.plugin.split(","):
        figure = run_with_redis(args.lines, args.runs, f"parser ({name}) per process",
                                lambda client, log, n=name: run_once(client, log, n), kontext=name == "kontext")
        row(f"P2 parse, {name} plugin (lines/s per process, median of {args.runs})", f"{figure:,.0f}",
            target=">= 200,000" if name == "accesslog" else "")


if __name__ == "__main__":
    main()
