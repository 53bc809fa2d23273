"""Shared pieces of the benchmarks: data, a private Redis, medians."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.genlog import lines
from tests.servers import RedisServer


def access_log(path: Path, count: int, seed: int = 1) -> Path:
    if not path.exists() or path.stat().st_size == 0:
        with path.open("w") as handle:
            batch = []
            for line in lines(count, seed):
                batch.append(line)
                if len(batch) == 10000:
                    handle.write("\n".join(batch) + "\n")
                    batch.clear()
            if batch:
                handle.write("\n".join(batch) + "\n")
    return path


def private_redis(workdir: Path | None = None) -> RedisServer:
    """A redis-server for one benchmark: AOF off (we measure loglines, not the disk)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    server = RedisServer(workdir)
    server.extra = ["--appendonly", "no"]
    return server.start()


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, float, float]:
    """Median, min and max of ``runs`` measurements."""
    values = [measure() for _ in range(runs)]
    return statistics.median(values), min(values), max(values)
