"""P1: watcher file -> Redis, lines/s with offsets committed (one process)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import push_file, run_with_redis


def run_once(client, log: Path, count: int, batch_lines: int = 500) -> float:  # type: ignore[no-untyped-def]
    client.flushall()
    started = time.perf_counter()
    pushed = push_file(client, log, batch_lines)
    elapsed = time.perf_counter() - started
    assert pushed == count, (pushed, count)
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-lines", type=int, default=500)
    args = parser.parse_args()
    run_with_redis(args.lines, args.runs, f"watcher file->redis (batch_lines={args.batch_lines})",
                   lambda client, log: run_once(client, log, args.lines, args.batch_lines))


if __name__ == "__main__":
    main()
