"""What ``status`` and the monitor read beyond queue lengths: how old each worker's heartbeat
is, and how old the oldest line a watcher has not shipped yet is.

A heartbeat key holds the time the worker's loop last turned (see ``core.worker``): its age is
how long ago that was, whoever reads it. The age of the oldest unshipped line is bounded from
below twice over, both bounds true: the bytes past the saved offset were written before the
file's last modification (``now - mtime``), and before the first time anyone saw the file
larger than that offset (the monitor notes, at each check, how large each watched file is:
:func:`note_sizes`). Without a monitor running, the first bound alone is shown.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import orjson
import redis

from pipeline.core.keys import Keys

#: queues (from Redis) and files (per watcher) shown at most, in metrics and charts: the busiest first
MAX_SERIES = 200

#: Size notes kept per file: a note is taken only when the file grew, so this many growths.
SIZE_NOTES = 64


def worker_of(key_suffix: str, sections: Iterable[str]) -> str | None:
    """The section a heartbeat belongs to: ``host/process`` (a consumer, ``process`` being the
    section or ``section_NN`` with numprocs), ``host/process/<more>`` (a forwarder's target,
    the HTTP worker's write probe), or the bare section name (a watcher)."""
    parts = key_suffix.split("/")
    process = parts[1] if len(parts) > 1 else parts[0]
    for section in sections:
        head, _, number = process.rpartition("_")
        if process == section or (head == section and number.isdigit()):
            return section
    return None


def heartbeat_ages(client: redis.Redis, keys: Keys, sections: Iterable[str], now: float) -> dict[str, float]:
    """Section -> age in seconds of its oldest live heartbeat (a process whose loop is stuck
    shows its age; a dead one has no key)."""
    head = keys.heartbeat("")
    names = list(sections)
    found = sorted(client.scan_iter(match=_escape(head) + "*", count=1000))
    if not found:
        return {}
    ages: dict[str, float] = {}
    for key, value in zip(found, client.mget(found), strict=True):
        section = worker_of(key.decode()[len(head):], names)
        try:
            age = max(0.0, now - float(value)) if value is not None and section else None
        except ValueError:
            age = None
        if section and age is not None:
            ages[section] = round(max(age, ages.get(section, 0.0)), 3)
    return ages


def unshipped_ages(client: redis.Redis, keys: Keys, watcher: str, files: list[dict[str, Any]],
                   now: float) -> dict[str, float | None]:
    """Path -> at least how many seconds the oldest line not yet shipped has waited (0 when the
    file is read to its end; None when this machine cannot see the file)."""
    notes = {k.decode(): orjson.loads(v) for k, v in client.hgetall(keys.monitor("sizes", watcher)).items()}
    out: dict[str, float | None] = {}
    for f in files:
        path, size, offset = str(f["path"]), f.get("size"), int(f["offset"])
        if size is None:
            out[path] = None
            continue
        if size <= offset:
            out[path] = 0.0
            continue
        bound = 0.0
        try:
            st = os.stat(path)
            if st.st_size == size:  # the file at the path is the one read (not rotated away)
                bound = now - st.st_mtime
        except OSError:
            pass
        first = next((t for t, seen in notes.get(path, ()) if seen > offset), None)
        if first is not None:
            bound = max(bound, now - first)
        out[path] = round(max(0.0, bound), 3)
    return out


def note_sizes(client: redis.Redis, keys: Keys, watcher: str, files: list[dict[str, Any]],
               now: float) -> None:
    """Note how large each watched file is now, when it grew since the last note (the
    monitor does, at each check); notes of lines shipped since are dropped."""
    key = keys.monitor("sizes", watcher)
    old = {k.decode(): orjson.loads(v) for k, v in client.hgetall(key).items()}
    fresh: dict[str, bytes] = {}
    for f in files:
        path, size, offset = str(f["path"]), f.get("size"), int(f["offset"])
        if size is None:
            continue
        notes = [n for n in old.get(path, []) if n[1] > offset]  # still ahead of the reader
        if size > offset and (not notes or notes[-1][1] < size):
            notes.append([round(now, 3), size])
        if len(notes) > SIZE_NOTES:  # the first note is the one that bounds the oldest line
            notes = notes[:1] + notes[-(SIZE_NOTES - 1):]
        fresh[path] = orjson.dumps(notes)
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if fresh:
            pipe.hset(key, mapping=fresh)
        pipe.execute()


def _escape(pattern: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in pattern)
