"""The dead-letter list (and the tracker's failed-requests list): inspect, replay, purge.

Both hold JSON entries with the reason, the queue the payload came from, and the payload (the
raw message, or one item); replaying pushes the payload back to that queue (or another) and
removes the entry, atomically.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from pipeline.core.keys import Keys
from pipeline.core.message import dead_letter_payload


def entries(client: redis.Redis, list_key: str, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
    out = []
    for raw in client.lrange(list_key, start, stop):
        try:
            out.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            out.append({"reason": "unreadable dead-letter entry", "payload": raw.decode("utf-8", "replace")})
    return out


def replay(
    client: redis.Redis,
    keys: Keys,
    list_key: str,
    indexes: list[int] | None = None,
    to: str = "",
    only_queue: str = "",
) -> int:
    """Push entries' payloads back to their queue (or ``to``) and remove them; how many.

    ``only_queue`` limits the replay to entries that came from that queue.
    """
    done = 0
    raws = client.lrange(list_key, 0, -1)
    chosen = range(len(raws)) if indexes is None else [i for i in indexes if 0 <= i < len(raws)]
    for index in chosen:
        raw = raws[index]
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        payload = dead_letter_payload(entry)
        queue = to or entry.get("queue")
        if payload is None or not queue or (only_queue and entry.get("queue") != only_queue):
            continue
        if _move(client, list_key, raw, keys.queue(queue), payload):
            done += 1
    return done


def _move(client: redis.Redis, list_key: str, raw: bytes, queue_key: str, payload: bytes) -> bool:
    """Remove one entry and push its payload, atomically; False if the entry is gone."""
    while True:
        try:
            with client.pipeline(transaction=True) as pipe:
                pipe.watch(list_key)
                if pipe.lpos(list_key, raw) is None:
                    return False
                pipe.multi()
                pipe.lrem(list_key, 1, raw)
                pipe.rpush(queue_key, payload)
                pipe.execute()
                return True
        except redis.WatchError:
            continue


def purge(client: redis.Redis, list_key: str) -> int:
    count = int(client.llen(list_key))
    client.delete(list_key)
    return count
