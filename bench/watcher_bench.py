"""P1: watcher file -> Redis, lines/s with offsets committed (one process)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import access_log, median_of, private_redis
from pipeline.keys import Keys
from pipeline.options import WatcherOptions
from pipeline.watcher import Watcher
from pipeline.worker import Flags


def run_once(log: Path, client, count: int, batch_lines: int = 500) -> float:  # type: ignore[no-untyped-def]
    client.flushall()
    keys = Keys()
    w = Watcher("bench", WatcherOptions(logfile=(str(log),), pushto="raw", servicename="bench",
                                       batch_lines=batch_lines),
                client, keys, Flags())
    started = time.perf_counter()
    w.load_state()
    w.rescan(first=True)
    while w.pump():
        pass
    w.flush_due(force=True)
    elapsed = time.perf_counter() - started
    for tail in w.tails.values():
        tail.close()
    assert w.lines_pushed == count, (w.lines_pushed, count)
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-lines", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    log = access_log(work / "access.log", args.lines)
    server = private_redis(work / "redis")
    try:
        client = server.client()
        med, low, high = median_of(args.runs, lambda: run_once(log, client, args.lines, args.batch_lines))
        print(f"watcher file->redis (batch_lines={args.batch_lines}): {med:,.0f} lines/s (median of {args.runs}, {low:,.0f}..{high:,.0f})")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
