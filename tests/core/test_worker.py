"""The run loop every queue-consuming worker shares, run in this process against a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def number_in(raw: bytes) -> int:
    return int(message.expand(message.decode_elements(raw, 1 << 20))[0]["n"])


def _loop(write_cfg: Callable[[str], Path], r: redis.Redis, work_ahead: bool, count: int = 4,
          stop_at: int | None = None) -> list[str]:
    """Runs the loop over ``count`` one-item messages (a stop asked while handling ``stop_at``,
    else the last); what happened, in order: ``h<n>`` a handling, ``a<n>``/``A<n>`` an
    acknowledgement begun/returned. Each handling checks that its delivery is the last message
    of the in-flight list: no work is ever in hand with a message behind it."""
    for n in range(count):
        r.rpush(K.queue("in"), message.encode([{"n": n}]))
    cfg = loader.load(write_cfg(PARSER))
    program = cfg.worker("worker_p")
    flags = Flags()
    events: list[str] = []
    stop_at = count - 1 if stop_at is None else stop_at

    def make_handler(consumer: Consumer, _flags: Flags) -> Handler:
        inflight = consumer.inflight_key
        ack = consumer.ack

        def traced_ack(delivery: Delivery, outcome: Outcome, **options: Any) -> bool:
            n = delivery.items[0]["n"]
            events.append(f"a{n}")
            try:
                return ack(delivery, outcome, **options)
            finally:
                events.append(f"A{n}")

        consumer.ack = traced_ack  # type: ignore[method-assign]

        def handle(delivery: Delivery) -> Outcome:
            n = delivery.items[0]["n"]
            events.append(f"h{n}")
            assert r.lindex(inflight, -1) == delivery.raws[-1], (n, r.lrange(inflight, 0, -1))
            if n == stop_at:
                flags.stop = True  # the loop finishes what is in hand and leaves
            return Outcome(pushes=[("out", message.encode([{"n": n}]))], count=1, out=1)

        return handle

    assert run_consumer(cfg, program, "in", make_handler, flags, work_ahead=work_ahead) == 0
    out = [number_in(raw) for raw in r.lrange(K.queue("out"), 0, -1)]
    left = [number_in(raw) for raw in r.lrange(K.queue("in"), 0, -1)]
    assert out + left == list(range(count)) and not r.keys(K.inflight("*"))
    assert out == [int(e[1:]) for e in events if e[0] == "h"]  # each handled once, acknowledged once
    return events


def test_work_ahead_handles_the_next_delivery_while_the_ack_before_is_in_redis(write_cfg, r) -> None:  # type: ignore[no-untyped-def]
    """With ``work_ahead`` (the parser's), each delivery after the first is handled inside the
    acknowledgement of the one before (after its script is sent, before its reply is read),
    every one once and in order. Without it, each handling follows the acknowledgement before."""
    assert _loop(write_cfg, r, work_ahead=True) == [
        "h0", "a0", "h1", "A0", "a1", "h2", "A1", "a2", "h3", "A2", "a3", "A3"]
    r.flushall()
    assert _loop(write_cfg, r, work_ahead=False) == [
        "h0", "a0", "A0", "h1", "a1", "A1", "h2", "a2", "A2", "h3", "a3", "A3"]


def test_work_ahead_stopped_leaves_what_it_did_not_start_in_the_queue(write_cfg, r) -> None:  # type: ignore[no-untyped-def]
    """A stop asked while the second delivery is handled: the two handled are acknowledged, the
    rest stays at the head of the queue, in order, unhandled."""
    assert _loop(write_cfg, r, work_ahead=True, count=5, stop_at=1) == ["h0", "a0", "h1", "A0", "a1", "A1"]
    assert [number_in(raw) for raw in r.lrange(K.queue("in"), 0, -1)] == [2, 3, 4]
