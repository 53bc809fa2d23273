"""``loglines backfill``: push existing or rotated-away logs into a queue, resumably.

It is the watcher's reading and committing code run over fixed files until their end, with its
positions saved under ``backfill:<queue>``: run it again after an interruption and it goes on
where it stopped; run it on a file it has finished and it pushes nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import redis

from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.sources.watcher import Watcher, WatcherOptions


def backfill(
    client: redis.Redis,
    keys: Keys,
    files: Sequence[str],
    queue: str,
    service: str,
    flags: Flags,
    progress: bool = True,
) -> int:
    paths = tuple(os.path.abspath(f) for f in files)
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path}")
    opts = WatcherOptions(logfile=paths, pushto=queue, servicename=service, rescan_ms=3_600_000)
    watcher = Watcher("backfill", opts, client, keys, flags, state_name=f"backfill:{queue}")
    watcher.load_state()
    watcher.rescan(first=True)
    total = sum(os.path.getsize(p) for p in paths) or 1
    while not flags.stop:
        got = watcher.pump()
        if progress:
            done = sum(t.pos for t in watcher.tails.values())
            bar = "#" * int(30 * done / total)
            sys.stderr.write(f"\r[{bar:<30}] {100 * done / total:5.1f}%  {watcher.lines_pushed} lines")
        if not got:
            break
    if not flags.stop:  # at the end of the files: a last line without newline is a line
        for tail in watcher.tails.values():
            tail.flush_partial()
    watcher.first_pending_at = 0.0
    watcher.flush_due(force=True)
    if progress:
        sys.stderr.write("\n")
    for tail in watcher.tails.values():
        tail.close()
    return watcher.lines_pushed
