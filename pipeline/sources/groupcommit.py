"""Group commit for the HTTP ingest: the requests that arrive while a commit runs share the next.

One Lua script pushes the messages of every request of a group and records each request's
``Idempotency-Key`` with the answer given to it, atomically: with ``appendfsync always`` a group
costs one fsync, and a retry with a key already recorded gets the first answer and enqueues
nothing. With ``min_replicas`` a group is answered only once that many replicas hold it. The
committer also watches the queue's length (back-pressure) and whether Redis takes writes
(``/healthz``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
import redis.asyncio

from pipeline.config import RedisConfig
from pipeline.core.connection import REDIS_ERRORS
from pipeline.core.http import HttpError
from pipeline.core.keys import Keys
from pipeline.core.logsetup import safe
from pipeline.core.worker import consumer_id

if TYPE_CHECKING:
    from pipeline.sources.http import HttpOptions

log = logging.getLogger(__name__)

#: One commit for a whole group of requests: each request's messages are pushed unless its
#: Idempotency-Key is known, in which case the answer given to it the first time comes back.
GROUP_COMMIT = """
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local a, k = 3, 2
local out = {}
for r = 1, n do
  local has, answer, m = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local before = false
  if has == '1' then before = redis.call('GET', KEYS[k]) end
  if before then
    out[r] = before
  else
    for i = 0, m - 1 do redis.call('RPUSH', KEYS[1], ARGV[a + i]) end
    if has == '1' then redis.call('SET', KEYS[k], answer, 'EX', ttl) end
    out[r] = ''
  end
  if has == '1' then k = k + 1 end
  a = a + m
end
return out
"""

GROUP_REQUESTS = 256
GROUP_BYTES = 8 * 1024 * 1024


@dataclass
class Pending:
    idem_key: str  # the Redis key of its Idempotency-Key, or ""
    answer: bytes  # what to answer (and to remember for a retry)
    messages: list[bytes]
    done: asyncio.Future[tuple[bytes, bool]]


class Committer:
    """Group commit: requests wait here until the running commit is done, then go in the next
    one together. Also watches the queue's length and whether Redis takes writes."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys, opts: HttpOptions, name: str,
                 rcfg: RedisConfig) -> None:
        self.client, self.keys, self.opts, self.name, self.rcfg = client, keys, opts, name, rcfg
        self.queue_key = keys.queue(opts.pushto)
        self.script = client.register_script(GROUP_COMMIT)
        self.pending: list[Pending] = []
        self.wake = asyncio.Event()
        self.low_water = opts.low_water or opts.high_water * 4 // 5
        self.refusing = False  # over high water, until under low water
        self.writable = False  # Redis took the last write probe
        self.checked = 0.0
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._commit_loop()), loop.create_task(self._watch_loop())]

    async def stop(self) -> None:
        while self.pending:
            await asyncio.sleep(0.01)
        for task in self.tasks:
            task.cancel()
        await self.client.aclose()

    async def commit(self, idem_key: str, answer: bytes, messages: list[bytes]) -> tuple[bytes, bool]:
        """Push ``messages`` (unless the key says this request was taken before); the answer
        to give (``answer``, or the one given the first time) and whether it is a replay."""
        done: asyncio.Future[tuple[bytes, bool]] = asyncio.get_running_loop().create_future()
        self.pending.append(Pending(idem_key, answer, messages, done))
        self.wake.set()
        return await done

    async def _commit_loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                group: list[Pending] = []
                size = 0
                while self.pending and len(group) < GROUP_REQUESTS and size < GROUP_BYTES:
                    item = self.pending.pop(0)
                    group.append(item)
                    size += sum(map(len, item.messages))
                await self._commit(group)

    async def _commit(self, group: list[Pending]) -> None:
        keys = [self.queue_key] + [p.idem_key for p in group if p.idem_key]
        args: list[bytes | int] = [self.opts.idempotency_ttl, len(group)]
        for p in group:
            args += [b"1" if p.idem_key else b"0", p.answer, len(p.messages), *p.messages]
        try:
            results = await self.script(keys=keys, args=args)
            await self._replicated()
        except REDIS_ERRORS as exc:
            self.writable = False
            log.warning("%s: Redis did not take %d request(s): %s", self.name, len(group), safe(exc))
            for p in group:
                if not p.done.done():
                    p.done.set_exception(HttpError(503, "Redis is not taking writes now",
                                                   {"Retry-After": "2"}))
            return
        self.writable = True
        for p, before in zip(group, results, strict=True):
            if not p.done.done():
                p.done.set_result((bytes(before), True) if before else (p.answer, False))

    async def _replicated(self) -> None:
        """With ``min_replicas``: answer 2xx only once that many replicas have the group (a
        marker and WAIT on one connection; fewer: a 503, and the retry's key finds the group)."""
        if not self.rcfg.min_replicas:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.incr(self.keys.replication_marker)
            pipe.wait(self.rcfg.min_replicas, self.rcfg.min_replicas_timeout_ms)
            _, acked = await pipe.execute()
        if int(acked) < self.rcfg.min_replicas:
            raise redis.ResponseError(f"NOREPLICAS {acked} of {self.rcfg.min_replicas} replicas")

    async def _watch_loop(self) -> None:
        """The queue's length (for back-pressure) and a write probe (for /healthz), 5 times a
        second."""
        probe = self.keys.heartbeat(f"{consumer_id(self.name)}/http")
        while True:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.llen(self.queue_key)
                    pipe.set(probe, b"%.3f" % time.time(), ex=30)
                    length = (await pipe.execute())[0]
                self.writable = True
                if length >= self.opts.high_water and not self.refusing:
                    log.warning("%s: queue %s holds %d messages (high_water %d): answering 503 until it "
                                "is under %d", self.name, self.opts.pushto, length, self.opts.high_water,
                                self.low_water)
                self.refusing = length >= self.opts.high_water or (self.refusing and length > self.low_water)
            except REDIS_ERRORS:
                self.writable = False
            self.checked = time.monotonic()
            await asyncio.sleep(0.2)
