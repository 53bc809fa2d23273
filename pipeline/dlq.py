"""The dead-letter list: inspect, replay into the original queue, purge."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from pipeline.keys import Keys
from pipeline.message import dead_letter_payload


def entries(client: redis.Redis, keys: Keys, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
    out = []
    for raw in client.lrange(keys.dead_letters, start, stop):
        try:
            out.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            out.append({"reason": "unreadable dead-letter entry", "payload": raw.decode("utf-8", "replace")})
    return out


def replay(client: redis.Redis, keys: Keys, indexes: list[int] | None = None, to: str = "") -> int:
    """Push entries' payloads back to their queue (or ``to``) and remove them; how many."""
    done = 0
    raws = client.lrange(keys.dead_letters, 0, -1)
    chosen = range(len(raws)) if indexes is None else [i for i in indexes if 0 <= i < len(raws)]
    for index in chosen:
        raw = raws[index]
        entry = orjson.loads(raw)
        payload = dead_letter_payload(entry)
        queue = to or entry.get("queue")
        if payload is None or not queue:
            continue
        if _move(client, keys, raw, keys.queue(queue), payload):
            done += 1
    return done


def _move(client: redis.Redis, keys: Keys, raw: bytes, queue_key: str, payload: bytes) -> bool:
    """Remove one entry and push its payload, atomically; False if the entry is gone."""
    while True:
        try:
            with client.pipeline(transaction=True) as pipe:
                pipe.watch(keys.dead_letters)
                if pipe.lpos(keys.dead_letters, raw) is None:
                    return False
                pipe.multi()
                pipe.lrem(keys.dead_letters, 1, raw)
                pipe.rpush(queue_key, payload)
                pipe.execute()
                return True
        except redis.WatchError:
            continue


def purge(client: redis.Redis, keys: Keys) -> int:
    count = int(client.llen(keys.dead_letters))
    client.delete(keys.dead_letters)
    return count
