"""A forwarder target's disk spool: batches in order, in SQLite (WAL), bounded in bytes.

A batch enters with its id (a second insert of one id is a no-op: a spill interrupted by a
crash is completed without doubling), leaves only once the target accepted it, and the spool
never holds more than ``max_bytes`` of payload: when full it either refuses (``block``) or
drops its oldest batches (``drop_oldest``), counting them.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    queued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Spooled:
    seq: int
    batch_id: str
    payload: bytes


class Spool:
    def __init__(self, path: Path, max_bytes: int, drop_oldest: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.max_bytes, self.drop_oldest = path, max_bytes, drop_oldest
        import sqlite3  # here: every worker imports this module (through the registry), forwarders use it

        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a batch taken out of Redis is on disk first
            self.db.executescript(SCHEMA)
            self.bytes = int(self.db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM batches").fetchone()[0])
        except BaseException:  # not a spool (a damaged file): it stays as it is for whoever repairs it
            self.db.close()
            raise

    def add(self, batches: list[tuple[str, bytes]]) -> tuple[int, int]:
        """Store ``(batch_id, payload)`` pairs in order, atomically; (stored, dropped): the first
        ``stored`` pairs are in the spool (those it held already among them). With ``block``, only
        what fits is stored (the rest stays where it was): check :meth:`room`."""
        stored = dropped = dropped_items = 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for batch_id, payload in batches:
                if self.db.execute("SELECT 1 FROM batches WHERE batch_id = ?", (batch_id,)).fetchone():
                    stored += 1  # a spill a crash interrupted: stored then, takes no more room
                    continue
                if self.bytes + len(payload) > self.max_bytes:
                    if not self.drop_oldest:
                        break
                    while self.bytes + len(payload) > self.max_bytes:
                        oldest = self.db.execute("SELECT seq, payload FROM batches ORDER BY seq LIMIT 1").fetchone()
                        if oldest is None:
                            break
                        self.db.execute("DELETE FROM batches WHERE seq = ?", (oldest[0],))
                        self.bytes -= len(oldest[1])
                        dropped += 1
                        dropped_items += _items(bytes(oldest[1]))
                self.db.execute("INSERT INTO batches (batch_id, payload, queued_at) VALUES (?, ?, ?)",
                                (batch_id, payload, time.time()))
                self.bytes += len(payload)
                stored += 1
            for name, count in (("dropped", dropped), ("dropped_items", dropped_items)):
                if count:
                    self.db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                                    "SET value = value + excluded.value", (name, count))
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                self.db.execute("ROLLBACK")
            self.bytes = int(self.db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM batches").fetchone()[0])
            raise
        return stored, dropped

    def room(self, size: int) -> bool:
        return self.drop_oldest or self.bytes + size <= self.max_bytes

    def oldest(self) -> Spooled | None:
        row = self.db.execute("SELECT seq, batch_id, payload FROM batches ORDER BY seq LIMIT 1").fetchone()
        return Spooled(int(row[0]), str(row[1]), bytes(row[2])) if row else None

    def remove(self, seq: int) -> None:
        row = self.db.execute("SELECT LENGTH(payload) FROM batches WHERE seq = ?", (seq,)).fetchone()
        self.db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
        if row:
            self.bytes -= int(row[0])

    def figures(self) -> dict[str, float]:
        count, first = self.db.execute("SELECT COUNT(*), MIN(queued_at) FROM batches").fetchone()
        counters = dict(self.db.execute("SELECT name, value FROM counters").fetchall())
        return {"spool_batches": int(count), "spool_bytes": self.bytes,
                "spool_oldest_age_s": round(time.time() - first, 1) if first else 0.0,
                "dropped": int(counters.get("dropped", 0)), "dropped_items": int(counters.get("dropped_items", 0))}

    def close(self) -> None:
        self.db.close()


def spooled(path: Path) -> int | None:
    """How many batches the spool file at ``path`` holds, read-only; None when it cannot be read."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
    except sqlite3.Error:
        return None


def _items(payload: bytes) -> int:
    """How many items a batch held (for the count of what a full spool dropped)."""
    import orjson

    try:
        return len(orjson.loads(payload).get("items", []))
    except (orjson.JSONDecodeError, AttributeError):
        return 0
