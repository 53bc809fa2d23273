"""P5: how long a line takes from its write to its document being searchable, at a steady rate.

A writer appends sequence-numbered lines (``seq=N`` in the URL, bench/genlog.py) to a file the
system under test is already reading, in 10 ms slices, at a rate the system sustains. A poller
asks Elasticsearch every 50 ms, without forcing a refresh (the node's own refresh decides what
is searchable), how many documents of each slice not yet complete are searchable, finding them
by a number each document carries: the line's offset in the file (``off``, loglines) or its
``seq`` (the peer's template reads it from the line). A slice's lines are searchable when its
count is complete; their latency is from the slice's write to the answer that said so. No
assumption on order: each slice is counted on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from bench.common import settle
from bench.genlog import lines

POLL_S = 0.05
SLICE_S = 0.01
RANGES_PER_POLL = 200  # the oldest slices not yet complete, asked about in one request


@dataclass
class Latency:
    p50: float
    p99: float
    worst: float
    rate: float  # lines/s actually written
    never: int  # lines never searchable before the timeout


def keys_for(field: str, written: list[str]) -> list[int]:
    """The number that finds each line's document (and one past the last line)."""
    if field == "seq":
        return list(range(len(written) + 1))
    return list(accumulate((len(line.encode()) + 1 for line in written), initial=0))  # offsets


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def measure(make: Callable[[Path], AbstractContextManager[Any]], es: Elasticsearch, index: str,
            field: str, work: Path, rate: int, seconds: float, timeout: float = 120) -> Latency:
    """Start ``make(log)`` on an empty log, wait until it is idle, then write ``rate`` lines/s
    for ``seconds`` and measure each line's way into ``index``."""
    log = work / f"{index}.log"
    log.write_text("")
    total = int(rate * seconds)
    written_lines = list(lines(total, seed=5, seq=True))
    keys = keys_for(field, written_lines)
    per_slice = max(1, int(rate * SLICE_S))
    bounds = [(n, min(n + per_slice, total)) for n in range(0, total, per_slice)]
    written_at: list[float] = []  # appended by the writer, read by the poller
    searchable_at: list[float | None] = [None] * len(bounds)
    writing_done = threading.Event()

    def poll() -> None:
        first = 0
        deadline = float("inf")
        while first < len(bounds) and time.perf_counter() < deadline:
            upto = min(len(written_at), first + RANGES_PER_POLL)
            if upto > first:
                counts = _counts(es, index, field, [(keys[bounds[i][0]], keys[bounds[i][1]])
                                                    for i in range(first, upto)])
                answered = time.perf_counter()
                for i, count in zip(range(first, upto), counts, strict=True):
                    if searchable_at[i] is None and count >= bounds[i][1] - bounds[i][0]:
                        searchable_at[i] = answered
                while first < len(bounds) and searchable_at[first] is not None:
                    first += 1
            if writing_done.is_set() and deadline == float("inf"):
                deadline = time.perf_counter() + timeout
            time.sleep(POLL_S)

    with make(log) as system:
        settle(system.pids().values())
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        started = time.perf_counter()
        with log.open("a") as handle:
            for start, end in bounds:
                if (wait := started + start / rate - time.perf_counter()) > 0:
                    time.sleep(wait)
                handle.write("\n".join(written_lines[start:end]) + "\n")
                handle.flush()
                written_at.append(time.perf_counter())
        achieved = total / (time.perf_counter() - started)
        writing_done.set()
        poller.join()
    log.unlink()
    delays = sorted(_per_line(bounds, written_at, searchable_at))
    never = total - len(delays)
    if not delays:
        raise RuntimeError(f"no line written became searchable in {index} within {timeout:.0f} s")
    return Latency(percentile(delays, 0.5), percentile(delays, 0.99), delays[-1], achieved, never)


def _per_line(bounds: list[tuple[int, int]], written_at: list[float],
              searchable_at: list[float | None]) -> Iterator[float]:
    for (start, end), wrote, seen in zip(bounds, written_at, searchable_at, strict=True):
        if seen is not None:
            yield from [seen - wrote] * (end - start)


def _counts(es: Elasticsearch, index: str, field: str, ranges: list[tuple[int, int]]) -> list[int]:
    """Searchable documents whose ``field`` is in each [from, to) range."""
    try:
        answer = es.search(index=index, size=0, ignore_unavailable=True, request_cache=False,
                           query={"range": {field: {"gte": ranges[0][0], "lt": ranges[-1][1]}}},
                           aggs={"slices": {"range": {"field": field, "ranges": [
                               {"from": low, "to": high} for low, high in ranges]}}})
    except Exception:  # noqa: BLE001 - an index being created answers 503 for a moment
        return [0] * len(ranges)
    buckets = answer.get("aggregations", {}).get("slices", {}).get("buckets", [])
    return [int(b["doc_count"]) for b in buckets] if len(buckets) == len(ranges) else [0] * len(ranges)
