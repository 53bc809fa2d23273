"""The acknowledgement script of :mod:`pipeline.core.queue`, and how it is sent: at once, or
with work done while Redis applies it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import NoScriptError

#: The acknowledgement. KEYS: the in-flight list, the recoveries hash, the queue, then the keys
#: written. ARGV: the in-flight list's expected length (every message taken), how many of its
#: first messages are acknowledged (all of them, or those of the delivery before the ones still
#: being worked on), whether to take the next message (1/0), the numbers of appends and of
#: sets, then the appended values, and a field and a value per set. The reply: nil if the list
#: is not what this consumer took (nothing written), else {1} or {1, the next message, now in
#: flight}. An acknowledged message's recovery count, if any, is forgotten (its key is the
#: message's sha1, as :func:`pipeline.core.message.digest` makes it); the hash is almost always
#: empty, so the digests are worked out only when it is not. A write Redis refuses for a while
#: (disk full, out of memory, a replica) is refused at the script's first write, before
#: anything is written: that error is the script's reply as Redis gave it (not wrapped in a
#: script error), so the worker waits it out as it does for any command.
SCRIPT = """
local inflight, recoveries, queue = KEYS[1], KEYS[2], KEYS[3]
local taken, done = tonumber(ARGV[1]), tonumber(ARGV[2])
if redis.call('LLEN', inflight) ~= taken then return false end
local held = redis.call('HLEN', recoveries) > 0 and redis.call('LRANGE', inflight, 0, done - 1) or {}
-- a write refused (MISCONF, OOM, READONLY) is refused at the first one: its error, unwrapped
local removed
if done == taken then removed = redis.pcall('DEL', inflight) else removed = redis.pcall('LTRIM', inflight, done, -1) end
if type(removed) == 'table' and removed.err then  -- older servers prefix where it was raised
  return redis.error_reply(removed.err:match('^@user_script: %d+: %-(.-)%s*$') or removed.err)
end
for _, raw in ipairs(held) do redis.call('HDEL', recoveries, redis.sha1hex(raw)) end
local appends, sets = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 1, appends do redis.call('RPUSH', KEYS[3 + i], ARGV[5 + i]) end
local at = 5 + appends
for i = 1, sets do redis.call('HSET', KEYS[3 + appends + i], ARGV[at + 2 * i - 1], ARGV[at + 2 * i]) end
if ARGV[3] == '1' then
  local next = redis.call('LMOVE', queue, inflight, 'LEFT', 'RIGHT')
  if next then return {1, next} end
end
return {1}
"""


class Acknowledgement:
    """The script registered with one client. A plain client's connection can be written to
    now and read from later; a cluster client picks its node per command, so with it the
    reply is waited for at once and the work done after."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.script = client.register_script(SCRIPT)
        self.split = isinstance(client, redis.Redis) and client.connection is None

    def __call__(self, keys: list[str], args: list[Any], meanwhile: Callable[[], object] | None = None) -> Any:
        """The script's reply; ``meanwhile`` runs once it is sent, before its reply is read."""
        if meanwhile is None or not self.split:
            reply = self.script(keys=keys, args=args)
            if meanwhile is not None:
                meanwhile()
            return reply
        pool = self.client.connection_pool
        connection = pool.get_connection()
        forgotten = False  # a restarted Redis forgot the script: it did not run
        try:
            connection.send_command("EVALSHA", self.script.sha, len(keys), *keys, *args)
            try:
                meanwhile()
            finally:  # the reply is read whatever the work did: the connection stays in step
                try:
                    reply = connection.read_response()
                except NoScriptError:
                    forgotten = True
        except redis.ResponseError:
            raise
        except BaseException:
            connection.disconnect()  # a reply not read (a timeout, a lost connection) is not read later
            raise
        finally:
            pool.release(connection)
        return self.script(keys=keys, args=args) if forgotten else reply
