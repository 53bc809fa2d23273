"""The run loop every queue-consuming worker shares, run in this process against a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis

from pipeline.config import loader
from pipeline.core import message
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.core.queue import Consumer, Delivery, Outcome
from pipeline.core.worker import Handler, run_consumer

K = Keys()
PARSER = """
[worker_p]
type = parser
listento = in
pushto = out
plugin = jsonlines
"""


def _loop(write_cfg: Callable[[str], Path], r: redis.Redis, work_ahead: bool, count: int = 4) -> list[tuple[int, int]]:
    """Runs the loop over ``count`` one-item messages; what each handling saw: (its item, how
    many acknowledgements Redis had applied). The first handling pauses Redis' writes for a
    moment, so that its acknowledgement waits in Redis."""
    for n in range(count):
        r.rpush(K.queue("in"), message.encode([{"n": n}]))
    cfg = loader.load(write_cfg(PARSER))
    program = cfg.worker("worker_p")
    flags = Flags()
    seen: list[tuple[int, int]] = []

    def make_handler(consumer: Consumer, _flags: Flags) -> Handler:
        def handle(delivery: Delivery) -> Outcome:
            n = delivery.items[0]["n"]
            seen.append((n, int(r.llen(K.queue("out")))))
            if n == 0:
                r.client_pause(400, all=False)  # writes and scripts wait, reads go on
            if n == count - 1:
                flags.stop = True  # the loop finishes what is in hand and leaves
            return Outcome(pushes=[("out", message.encode([{"n": n}]))], count=1, out=1)

        return handle

    assert run_consumer(cfg, program, "in", make_handler, flags, work_ahead=work_ahead) == 0
    assert [number_in(raw) for raw in r.lrange(K.queue("out"), 0, -1)] == list(range(count))
    assert r.llen(K.queue("in")) == 0 and not r.keys(K.inflight("*"))
    return seen


def number_in(raw: bytes) -> int:
    return int(message.expand(message.decode_elements(raw, 1 << 20))[0]["n"])


def test_work_ahead_handles_the_next_delivery_while_the_ack_before_is_in_redis(write_cfg, r) -> None:  # type: ignore[no-untyped-def]
    """With ``work_ahead`` (the parser's), the second delivery is handled while the first one's
    acknowledgement waits in Redis; every delivery is handled once, acknowledged once, in
    order; the acknowledgement of the one before that is always applied by then. Without it,
    each handling starts after the acknowledgement before it."""
    seen = _loop(write_cfg, r, work_ahead=True)
    assert [n for n, _ in seen] == [0, 1, 2, 3] and seen[1] == (1, 0)  # the first ack held back
    assert all(applied in (n - 1, n) for n, applied in seen[1:])  # the one before: Redis' pace
    r.flushall()
    assert _loop(write_cfg, r, work_ahead=False) == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_work_ahead_leaves_what_it_did_not_start_in_the_queue_when_stopped(write_cfg, r) -> None:  # type: ignore[no-untyped-def]
    """A stop with a message taken by the last acknowledgement: that message goes back to the
    head of the queue, unhandled, and what was handled is acknowledged once."""
    for n in range(5):
        r.rpush(K.queue("in"), message.encode([{"n": n}]))
    cfg = loader.load(write_cfg(PARSER))
    flags = Flags()
    handled: list[int] = []

    def make_handler(consumer: Consumer, _flags: Flags) -> Handler:
        def handle(delivery: Delivery) -> Outcome:
            n = delivery.items[0]["n"]
            handled.append(n)
            if n == 1:
                flags.stop = True
            return Outcome(pushes=[("out", message.encode([{"n": n}]))], count=1, out=1)

        return handle

    assert run_consumer(cfg, cfg.worker("worker_p"), "in", make_handler, flags, work_ahead=True) == 0
    out = [number_in(raw) for raw in r.lrange(K.queue("out"), 0, -1)]
    left = [number_in(raw) for raw in r.lrange(K.queue("in"), 0, -1)]
    assert out == handled and sorted(out + left) == list(range(5)) and left == list(range(len(out), 5))
    assert not r.keys(K.inflight("*"))
