"""Queue semantics against a real Redis: take, acknowledge, recover, reap, dead-letter."""

from __future__ import annotations

import time

import orjson
import pytest
import redis

from pipeline.config import RedisConfig
from pipeline.core import message
from pipeline.core.connection import passing
from pipeline.core.keys import Keys
from pipeline.core.queue import Consumer, Outcome
from pipeline.core.reaper import reap
from tests.support.servers import RedisServer

CFG = RedisConfig(embedded=False, url="redis://unused", heartbeat_ttl=30, block_timeout=0.1)
K = Keys(CFG.prefix)


def consumer(r: redis.Redis, cid: str = "host/w1", queue: str = "in", works_ahead: bool = False,
             counted: bool = True) -> Consumer:
    c = Consumer(r, CFG, queue, cid, "w1", works_ahead=works_ahead, counted=counted)
    c.start()
    return c


def push(r: redis.Redis, queue: str, items: list[dict]) -> bytes:
    raw = message.encode(items)
    r.rpush(K.queue(queue), raw)
    return raw


def test_keys_share_one_hash_tag() -> None:
    keys = [K.queue("a"), K.inflight("x"), K.heartbeat("x"), K.consumers, K.recoveries,
            K.dead_letters, K.offsets("w"), K.filelog("f"), K.stats, K.rate(1)]
    assert all(k.startswith("{loglines}:") for k in keys)
    assert len(set(keys)) == len(keys)


def test_take_moves_to_inflight_and_ack_pushes_atomically(r: redis.Redis) -> None:
    raw = push(r, "in", [{"service": "s", "logline": "a"}])
    c = consumer(r)
    d = c.take()
    assert d is not None and d.items == [{"service": "s", "logline": "a"}]
    assert r.llen(K.queue("in")) == 0 and r.lrange(K.inflight("host/w1"), 0, -1) == [raw]
    assert c.ack(d, Outcome(pushes=[("out1", b"[1]"), ("out2", b"[2]")], count=1))
    assert r.llen(K.inflight("host/w1")) == 0
    assert r.lrange(K.queue("out1"), 0, -1) == [b"[1]"] and r.lrange(K.queue("out2"), 0, -1) == [b"[2]"]
    c.stats.flush(force=True)
    assert int(r.hget(K.stats, "w1")) == 1


def test_single_items_and_batches_are_both_accepted(r: redis.Redis) -> None:
    r.rpush(K.queue("in"), orjson.dumps({"date": "2024-01-01", "action": "q"}))
    push(r, "in", [{"a": 1}, {"a": 2}])
    c = consumer(r)
    first = c.take()
    assert first is not None and first.items == [{"date": "2024-01-01", "action": "q"}]
    c.ack(first, Outcome())
    second = c.take()
    assert second is not None and second.items == [{"a": 1}, {"a": 2}]


def test_fifo_order_with_rpush_producers(r: redis.Redis) -> None:
    for n in range(5):
        push(r, "in", [{"n": n}])
    c = consumer(r)
    seen = []
    for _ in range(5):
        d = c.take()
        assert d is not None
        seen.append(d.items[0]["n"])
        c.ack(d, Outcome())
    assert seen == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"{not json", "not JSON"),
        (b"42", "not an object"),
        (b"[1, 2]", "not an object"),
        (b"\x80\x04\x95pickle", "not JSON"),
        (b'[{"service": "s", "src": "f", "off": -1, "loglines": ["a"]}]', "a run of lines needs"),
        (b'[{"service": "s", "src": "f", "off": 0, "loglines": ["a", 2]}]', "a run of lines needs"),
        (b'[{"service": "s", "src": "f", "off": 0, "loglines": "a"}]', "a run of lines needs"),
        (b'{"service": "s", "src": "f", "off": 1.5, "loglines": []}', "a run of lines needs"),
    ],
)
def test_undecodable_payload_is_dead_lettered_with_reason(r: redis.Redis, payload: bytes, reason: str) -> None:
    from pipeline.core.worker import undecodable

    r.rpush(K.queue("in"), payload)
    push(r, "in", [{"ok": 1}])
    c = consumer(r)
    d = c.take()
    assert d is not None and d.items == [] and reason in d.bad[0][1]
    assert c.ack(d, Outcome(dead=undecodable(c, d)))
    entry = orjson.loads(r.lindex(K.dead_letters, 0))
    assert reason in entry["reason"] and entry["queue"] == "in"
    assert message.dead_letter_payload(entry) == payload
    nxt = c.take()  # the queue flows on
    assert nxt is not None and nxt.items == [{"ok": 1}]


def test_oversized_payload_is_refused_before_parsing(r: redis.Redis) -> None:
    small = RedisConfig(embedded=False, url="redis://unused", max_payload_bytes=100, block_timeout=0.1)
    r.rpush(K.queue("in"), b"[" + b'{"a":1},' * 50 + b'{"a":1}]')
    c = Consumer(r, small, "in", "host/w1", "w1")
    c.start()
    d = c.take()
    assert d is not None and d.items == [] and "exceeds the cap" in d.bad[0][1]


def test_restarted_consumer_finishes_its_own_inflight_batch_first(r: redis.Redis) -> None:
    raw = push(r, "in", [{"n": 1}])
    push(r, "in", [{"n": 2}])
    dead = consumer(r)
    assert dead.take() is not None  # then the process "dies"
    again = consumer(r)  # same id: a restart
    d = again.take()
    assert d is not None and d.raw == raw and d.recovered == 1
    assert again.ack(d, Outcome())
    assert r.hlen(K.recoveries) == 0


def test_poison_batch_is_dead_lettered_after_three_recoveries(r: redis.Redis) -> None:
    push(r, "in", [{"poison": True}])
    push(r, "in", [{"fine": True}])
    c = consumer(r)
    assert c.take() is not None
    for attempt in (1, 2):
        c = consumer(r)
        d = c.take()
        assert d is not None and d.recovered == attempt
    c = consumer(r)
    assert c.take() is None  # third recovery: dead-lettered, not handed out
    entry = orjson.loads(r.lindex(K.dead_letters, 0))
    assert "recovered 3 times" in entry["reason"] and orjson.loads(entry["payload"]) == [{"poison": True}]
    d = c.take()
    assert d is not None and d.items == [{"fine": True}]


def test_ack_refused_after_reaper_took_the_batch(r: redis.Redis) -> None:
    push(r, "in", [{"n": 1}])
    slow = consumer(r, "host/slow")
    d = slow.take()
    assert d is not None
    r.delete(K.heartbeat("host/slow"))  # it looked dead for a while
    assert reap(r, CFG).requeued == 1
    assert not slow.ack(d, Outcome(pushes=[("out", b"[1]")]))
    assert r.llen(K.queue("out")) == 0  # no double delivery
    assert r.llen(K.queue("in")) == 1


def test_reaper_leaves_live_consumers_alone_and_requeues_each_orphan_once(r: redis.Redis) -> None:
    for n in range(3):
        push(r, "in", [{"n": n}])
    live, dead1, dead2 = consumer(r, "h/live"), consumer(r, "h/dead1"), consumer(r, "h/dead2")
    for c in (live, dead1, dead2):
        assert c.take() is not None
    r.delete(K.heartbeat("h/dead1"), K.heartbeat("h/dead2"))
    other = redis.Redis(connection_pool=r.connection_pool)
    first, second = reap(r, CFG), reap(other, CFG)
    assert first.requeued + second.requeued == 2
    assert r.llen(K.inflight("h/live")) == 1
    assert sorted(orjson.loads(x)[0]["n"] for x in r.lrange(K.queue("in"), 0, -1)) == [1, 2]


def test_reaped_batch_goes_to_the_head_of_its_queue(r: redis.Redis) -> None:
    push(r, "in", [{"n": 0}])
    push(r, "in", [{"n": 1}])
    dead = consumer(r, "h/dead")
    assert dead.take() is not None
    r.delete(K.heartbeat("h/dead"))
    reap(r, CFG)
    assert orjson.loads(r.lindex(K.queue("in"), 0)) == [{"n": 0}]


def test_hand_back_returns_batch_to_queue_head(r: redis.Redis) -> None:
    push(r, "in", [{"n": 0}])
    push(r, "in", [{"n": 1}])
    c = consumer(r)
    assert c.take() is not None
    assert c.hand_back()
    assert r.llen(K.inflight("host/w1")) == 0
    assert orjson.loads(r.lindex(K.queue("in"), 0)) == [{"n": 0}]


def test_gathering_several_messages_is_one_unit_of_work(r: redis.Redis) -> None:
    for n in range(5):
        push(r, "in", [{"n": n}, {"n": n}])
    r.rpush(K.queue("in"), b"not json")
    c = consumer(r)
    d = c.take(gather_items=7, linger=0.5)
    assert d is not None and len(d.raws) == 4 and len(d.items) == 8  # stops once 7 are in hand
    assert r.llen(K.inflight("host/w1")) == 4
    assert c.ack(d, Outcome(count=8)) and r.llen(K.inflight("host/w1")) == 0
    d = c.take(gather_items=100, linger=0.2)
    assert d is not None and len(d.raws) == 2 and len(d.items) == 2 and len(d.bad) == 1


def test_gathering_takes_what_is_queued_and_never_waits_for_more(r: redis.Redis) -> None:
    """Without linger, a bulk is what the queue holds (up to the count), taken at once: one
    message alone is not held back waiting for company."""
    for n in range(3):
        push(r, "in", [{"n": n}])
    c = consumer(r)
    started = time.monotonic()
    d = c.take(gather_items=100)
    assert d is not None and len(d.raws) == 3 and d.count == 3
    assert c.ack(d, Outcome(count=3))
    push(r, "in", [{"n": 3}])
    d = c.take(gather_items=100)
    assert d is not None and d.count == 1
    assert time.monotonic() - started < CFG.block_timeout  # no wait at all, either time


def test_gathered_messages_are_handed_back_and_reaped_in_order(r: redis.Redis) -> None:
    for n in range(4):
        push(r, "in", [{"n": n}])
    c = consumer(r, "h/gather")
    d = c.take(gather_items=3, linger=0.5)
    assert d is not None and len(d.raws) == 3
    assert c.hand_back()
    assert [orjson.loads(x)[0]["n"] for x in r.lrange(K.queue("in"), 0, -1)] == [0, 1, 2, 3]
    d = c.take(gather_items=3, linger=0.5)
    assert d is not None
    r.delete(K.heartbeat("h/gather"))
    assert reap(r, CFG).requeued == 1
    assert [orjson.loads(x)[0]["n"] for x in r.lrange(K.queue("in"), 0, -1)] == [0, 1, 2, 3]
    restarted = consumer(r, "h/gather")
    assert restarted.take() is not None  # nothing of its own left: a fresh message


def test_a_redis_that_evicts_is_refused_and_one_without_persistence_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On allkeys-lru, queues, offsets and heartbeats were evicted with no error anywhere."""
    from pipeline.core.connection import UnfitServer, check_server
    from tests.support.servers import RedisServer

    server = RedisServer(tmp_path / "evicting", None, "--maxmemory-policy", "allkeys-lru").start()
    try:
        client = server.client()
        with pytest.raises(UnfitServer, match="maxmemory-policy allkeys-lru"):
            check_server(client)
        consumer = Consumer(client, RedisConfig(url=server.url, embedded=False), "q", "c", "w")
        with pytest.raises(UnfitServer):
            consumer.start()
        assert not client.exists(K.heartbeat("c"))  # never registered
        client.config_set("maxmemory-policy", "volatile-ttl")
        with pytest.raises(UnfitServer, match="volatile-ttl"):
            check_server(client)
        client.config_set("maxmemory-policy", "noeviction")
        assert check_server(client) == []  # the test servers keep an append-only file
        client.config_set("appendonly", "no")
        assert any("append-only file" in w for w in check_server(client))
    finally:
        server.stop()


def test_ack_refused_when_the_batch_was_reaped_between_gathered_messages(r: redis.Redis) -> None:
    """Reaped after its first message was taken, the consumer gathered a second one: the first
    went back to the queue (someone else does it), so acknowledging both would do it twice."""
    for n in range(2):
        push(r, "in", [{"n": n}])
    c = consumer(r, "h/gather")
    d = c.take(gather_items=2, linger=0.5)
    assert d is not None and len(d.raws) == 2
    first = r.lpop(K.inflight("h/gather"))  # what a reaper did to the first message meanwhile
    r.lpush(K.queue("in"), first)
    assert not c.ack(d, Outcome(pushes=[("out", b"[]")], count=2))
    assert r.llen(K.queue("out")) == 0 and r.llen(K.inflight("h/gather")) == 1


def test_a_stopped_worker_killed_on_its_way_out_counts_no_recovery(r: redis.Redis) -> None:
    """supervisord SIGKILLs a worker that outstays stopwaitsecs (Elasticsearch hanging, say):
    that is a stop, not a crash, so the healthy batch it held is never dead-lettered as poison
    however often it happens; a crash still counts."""
    push(r, "in", [{"n": 1}])
    for _ in range(CFG.max_recoveries + 2):
        c = consumer(r, "h/idx")
        d = c.take()
        assert d is not None and d.recovered == 0
        c.mark_stopping()  # SIGTERM seen; then SIGKILL before the batch was handed back
    assert r.llen(K.dead_letters) == 0 and not r.hgetall(K.recoveries)
    d = consumer(r, "h/idx").take()  # the last stopped one's batch, taken back: then crashes
    assert d is not None and d.recovered == 0
    for attempt in range(1, CFG.max_recoveries):
        c = consumer(r, "h/idx")
        d = c.take()
        assert d is not None and d.recovered == attempt
    assert consumer(r, "h/idx").take() is None and r.llen(K.dead_letters) == 1

    push(r, "in", [{"n": 2}])  # the reaper honours the mark too
    c = consumer(r, "h/other")
    assert c.take() is not None
    c.mark_stopping()
    r.delete(K.heartbeat("h/other"))
    assert reap(r, CFG).requeued == 1 and not r.hgetall(K.recoveries)
    assert not r.exists(K.stopping("h/other"))


def test_ack_takes_the_next_message_in_the_same_transaction(r: redis.Redis) -> None:
    """With ``take_next`` the acknowledgement also moves the next message into the in-flight
    list: the next take is that message, and a crash between the two loses nothing."""
    first, second, third = (push(r, "in", [{"n": n}]) for n in range(3))
    c = consumer(r, "h/next")
    d = c.take()
    assert d is not None and d.raws == [first]
    assert c.ack(d, Outcome(pushes=[("out", b"[0]")], count=1), take_next=True)
    assert r.lrange(K.inflight("h/next"), 0, -1) == [second] and r.lrange(K.queue("in"), 0, -1) == [third]
    assert r.lrange(K.queue("out"), 0, -1) == [b"[0]"]
    d = c.take()
    assert d is not None and d.raws == [second] and d.items == [{"n": 1}]
    assert c.ack(d, Outcome(count=1), take_next=True)
    # the process dies holding the message the ack took: the next one recovers it
    again = consumer(r, "h/next").take()
    assert again is not None and again.raws == [third] and again.recovered == 1


def test_a_stopping_consumer_hands_back_the_message_its_ack_took(r: redis.Redis) -> None:
    first, second, third = (push(r, "in", [{"n": n}]) for n in range(3))
    c = consumer(r, "h/stop")
    d = c.take()
    assert d is not None and c.ack(d, Outcome(count=1), take_next=True)
    c.stop()
    assert r.llen(K.inflight("h/stop")) == 0
    assert r.lrange(K.queue("in"), 0, -1) == [second, third]  # at the head, in order


def test_a_refused_ack_writes_nothing_and_takes_nothing(r: redis.Redis) -> None:
    push(r, "in", [{"n": 1}])
    other = push(r, "in", [{"n": 2}])
    c = consumer(r, "h/refused")
    d = c.take()
    assert d is not None
    r.delete(K.inflight("h/refused"))  # reaped: the first message is someone else's now
    assert not c.ack(d, Outcome(pushes=[("out", b"[1]")], dead=[b"{}"], appends=[(K.failed, b"e")],
                                sets=[(K.filelog("f"), "path", b"{}")], count=1), take_next=True)
    assert r.llen(K.queue("out")) == 0 and r.llen(K.dead_letters) == 0 and r.llen(K.failed) == 0
    assert not r.exists(K.filelog("f")) and r.lrange(K.queue("in"), 0, -1) == [other]
    assert r.llen(K.inflight("h/refused")) == 0


def test_an_ack_writes_its_appends_and_sets_with_the_results(r: redis.Redis) -> None:
    push(r, "in", [{"n": 1}, {"n": 2}])
    c = consumer(r, "h/writes")
    d = c.take()
    assert d is not None
    r.hset(K.recoveries, message.digest(d.raw), 1)
    assert c.ack(d, Outcome(pushes=[("a", b"[1]"), ("b", b"[2]"), ("a", b"[3]")], dead=[b"d1", b"d2"],
                            appends=[(K.failed, b"e1"), (K.failed, b"e2")],
                            sets=[(K.filelog("f"), "p1", b"s1"), (K.filelog("f"), "p2", b"s2")], count=2))
    assert r.lrange(K.queue("a"), 0, -1) == [b"[1]", b"[3]"] and r.lrange(K.queue("b"), 0, -1) == [b"[2]"]
    assert r.lrange(K.dead_letters, 0, -1) == [b"d1", b"d2"] and r.lrange(K.failed, 0, -1) == [b"e1", b"e2"]
    assert r.hgetall(K.filelog("f")) == {b"p1": b"s1", b"p2": b"s2"}
    assert not r.hgetall(K.recoveries) and r.llen(K.inflight("h/writes")) == 0


def test_an_ack_forgets_the_recovery_counts_of_its_messages_only(r: redis.Redis) -> None:
    """The script works out the messages' digests itself (when any count is kept): they must be
    the keys the reaper and a restarted consumer count under."""
    for n in range(3):
        push(r, "in", [{"n": n}])
    c = consumer(r, "h/counts")
    d = c.take(gather_items=2)
    assert d is not None and len(d.raws) == 2
    left = r.lindex(K.queue("in"), 0)
    r.hset(K.recoveries, mapping={message.digest(raw): 2 for raw in [*d.raws, left]})
    assert c.ack(d, Outcome(count=2))
    assert r.hgetall(K.recoveries) == {message.digest(left).encode(): b"2"}


def test_an_ack_redis_refuses_for_a_while_writes_nothing_and_is_waited_out(r: redis.Redis) -> None:
    """A Redis that refuses writes (a replica now, a full disk, no memory) refuses the script's
    first write: the error reaches the worker as Redis gave it, which it waits out (a script
    error would crash the worker, and each crash count a recovery towards poison)."""
    push(r, "in", [{"n": 1}])
    nxt = push(r, "in", [{"n": 2}])
    c = consumer(r, "h/readonly")
    d = c.take()
    assert d is not None
    r.replicaof("127.0.0.1", "1")  # a replica of a master that is not there: read-only
    try:
        with pytest.raises(redis.ResponseError) as refused:
            c.ack(d, Outcome(pushes=[("out", b"[1]")], count=1), take_next=True)
        assert passing(refused.value), refused.value
        assert r.lrange(K.inflight("h/readonly"), 0, -1) == d.raws and r.llen(K.queue("out")) == 0
    finally:
        r.replicaof("NO", "ONE")
    c.after_connection_error()  # what the worker loop does with any Redis error
    again = c.take()
    assert again is not None and again.raws == d.raws
    assert c.ack(again, Outcome(pushes=[("out", b"[1]")], count=1), take_next=True)
    assert r.lrange(K.queue("out"), 0, -1) == [b"[1]"] and r.lrange(K.inflight("h/readonly"), 0, -1) == [nxt]


def test_deliveries_taken_ahead_are_acknowledged_in_order_and_the_later_stay_in_flight(r: redis.Redis) -> None:
    """Two deliveries in hand (an indexer's two bulks in flight): the first one's ack removes its
    messages only, and forgets only their recovery counts."""
    raws = [push(r, "in", [{"n": n}]) for n in range(3)]
    c = consumer(r, "h/ahead")
    first = c.take()
    second = c.take_ahead()
    assert first is not None and second is not None and first.raws == raws[:1] and second.raws == raws[1:2]
    assert r.lrange(K.inflight("h/ahead"), 0, -1) == raws[:2]
    r.hset(K.recoveries, mapping={message.digest(raw): 1 for raw in raws[:2]})
    assert c.ack(first, Outcome(pushes=[("out", b"[0]")], count=1), behind=len(second.raws))
    assert r.lrange(K.inflight("h/ahead"), 0, -1) == raws[1:2] and r.lrange(K.queue("out"), 0, -1) == [b"[0]"]
    assert r.hgetall(K.recoveries) == {message.digest(raws[1]).encode(): b"1"}
    third = c.take_ahead()
    assert third is not None and third.raws == raws[2:] and c.take_ahead() is None  # nothing queued
    assert c.ack(second, Outcome(pushes=[("out", b"[1]")], count=1), behind=1)
    assert c.ack(third, Outcome(pushes=[("out", b"[2]")], count=1))
    assert r.llen(K.inflight("h/ahead")) == 0 and r.lrange(K.queue("out"), 0, -1) == [b"[0]", b"[1]", b"[2]"]
    assert r.hlen(K.recoveries) == 0


def test_a_crash_with_deliveries_taken_ahead_takes_all_of_them_back(r: redis.Redis) -> None:
    raws = [push(r, "in", [{"n": n}]) for n in range(3)]
    dying = consumer(r, "h/ahead")
    assert dying.take() is not None and dying.take_ahead(gather_items=2) is not None  # then it dies
    again = consumer(r, "h/ahead")
    d = again.take()
    assert d is not None and d.raws == raws and d.recovered == 1 and [i["n"] for i in d.items] == [0, 1, 2]
    assert again.ack(d, Outcome()) and r.llen(K.inflight("h/ahead")) == 0


def test_an_ack_with_deliveries_ahead_is_refused_once_reaped_and_nothing_is_taken_ahead_unknowingly(
        r: redis.Redis) -> None:
    raws = [push(r, "in", [{"n": n}]) for n in range(3)]
    slow = consumer(r, "h/slow")
    first, second = slow.take(), slow.take_ahead()
    assert first is not None and second is not None
    r.delete(K.heartbeat("h/slow"))  # it looked dead for a while
    assert reap(r, CFG).requeued == 1  # its one in-flight list, both deliveries
    assert r.lrange(K.queue("in"), 0, -1) == raws  # back at the head, in order
    assert not slow.ack(first, Outcome(pushes=[("out", b"[0]")]), behind=1)
    assert r.llen(K.queue("out")) == 0 and r.llen(K.inflight("h/slow")) == 0
    assert slow.take_ahead() is None  # its in-flight list is not known now: take() looks first
    slow.after_connection_error()
    assert slow.take_ahead() is None and r.llen(K.inflight("h/slow")) == 0


def test_work_done_while_an_ack_is_in_redis_runs_once_and_leaves_the_connection_in_step(
        r: redis.Redis) -> None:
    """``meanwhile`` runs between sending the script and reading its reply: a command of its
    own gets its own answer, what it raises comes out once the ack's reply is read (the ack is
    applied, and the connection's next reply is not that one's), and a Redis that forgot the
    script runs it once."""
    raws = [push(r, "in", [{"n": n}]) for n in range(3)]
    c = consumer(r, "h/meanwhile")
    seen: list[int] = []
    d = c.take()
    assert d is not None
    assert c.ack(d, Outcome(pushes=[("out", b"[0]")], count=1), take_next=True,
                 meanwhile=lambda: seen.append(int(r.llen(K.queue("in")))))
    assert seen in ([1], [2]) and r.lrange(K.queue("out"), 0, -1) == [b"[0]"]  # Redis' pace decides
    d = c.take()
    assert d is not None and d.raws == raws[1:2]

    def fails() -> None:
        raise RuntimeError("the work behind failed")

    with pytest.raises(RuntimeError, match="the work behind failed"):
        c.ack(d, Outcome(pushes=[("out", b"[1]")], count=1), meanwhile=fails)
    assert r.lrange(K.queue("out"), 0, -1) == [b"[0]", b"[1]"] and r.llen(K.inflight("h/meanwhile")) == 0
    for _ in range(3):  # every pooled connection answers its own command
        assert r.llen(K.queue("in")) == 1 and r.ping() is True
    r.script_flush()
    d = c.take()
    assert d is not None and d.raws == raws[2:]
    ran: list[int] = []
    assert c.ack(d, Outcome(pushes=[("out", b"[2]")], count=1), meanwhile=lambda: ran.append(1))
    assert ran == [1] and r.lrange(K.queue("out"), 0, -1) == [b"[0]", b"[1]", b"[2]"]
    assert r.llen(K.inflight("h/meanwhile")) == 0


def test_a_connection_lost_while_an_ack_is_in_redis_loses_and_doubles_nothing(
        r: redis.Redis, redis_server: RedisServer) -> None:
    """The connection of an ack in flight is killed while the work behind is done (the script
    held back by a write pause, so it never runs): the reply is lost, and the next take finds
    both deliveries in the in-flight list."""
    raws = [push(r, "in", [{"n": n}]) for n in range(2)]
    c = consumer(r, "h/lost")
    first, second = c.take(), c.take_ahead()
    assert first is not None and second is not None
    killer = redis_server.client()

    def kill_the_ack() -> None:
        deadline = time.monotonic() + 5
        while not (acks := [e["id"] for e in killer.client_list() if e["cmd"] == "evalsha"]):
            assert time.monotonic() < deadline, "the ack never reached Redis"
            time.sleep(0.01)
        killer.client_kill_filter(_id=acks[0])
        killer.client_unpause()

    killer.client_pause(5000, all=False)  # writes and scripts wait
    try:
        with pytest.raises(redis.ConnectionError):
            c.ack(first, Outcome(pushes=[("out", b"[0]")], count=1), behind=1, meanwhile=kill_the_ack)
    finally:
        killer.client_unpause()
        killer.close()
    c.after_connection_error()  # what the worker loop does with any Redis error
    again = c.take()
    assert again is not None and again.raws == raws and r.llen(K.queue("out")) == 0
    assert c.ack(again, Outcome(pushes=[("out", b"[0, 1]")], count=2))
    assert r.llen(K.inflight("h/lost")) == 0 and r.lrange(K.queue("out"), 0, -1) == [b"[0, 1]"]


def test_a_consumer_working_ahead_that_dies_blames_only_its_last_message(r: redis.Redis) -> None:
    """A parser dies with two messages in flight: the first done (its acknowledgement on its
    way), the second in work. Only the second counts recoveries; after three it alone is
    dead-lettered, and the first is delivered again, never dead-lettered with it."""
    done, killer, after = (push(r, "in", [{"n": n}]) for n in range(3))
    c = consumer(r, "h/parser", works_ahead=True)
    assert c.take() is not None and c.take_ahead() is not None  # then it dies, three times
    for attempt in (1, 2):
        c = consumer(r, "h/parser", works_ahead=True)
        d = c.take()
        assert d is not None and d.raws == [done, killer] and d.recovered == attempt
        assert r.hgetall(K.recoveries) == {message.digest(killer).encode(): str(attempt).encode()}
    c = consumer(r, "h/parser", works_ahead=True)
    d = c.take()
    assert d is not None and d.raws == [done] and d.recovered == 3
    assert [message.dead_letter_payload(orjson.loads(e)) for e in r.lrange(K.dead_letters, 0, -1)] == [killer]
    assert c.ack(d, Outcome(count=1), take_next=True) and not r.hgetall(K.recoveries)
    assert r.lrange(K.inflight("h/parser"), 0, -1) == [after]


def test_the_reaper_blames_only_the_last_message_of_a_consumer_working_ahead(r: redis.Redis) -> None:
    """The same rule when another worker reaps the dead one's list: both messages go back to
    the head of the queue in order, only the last one counted; a consumer that does not work
    ahead has every message counted (any of them may have been in work)."""
    raws = [push(r, "in", [{"n": n}]) for n in range(2)]
    parser = consumer(r, "h/ahead-dead", works_ahead=True)
    assert parser.take() is not None and parser.take_ahead() is not None
    r.delete(K.heartbeat("h/ahead-dead"))
    assert reap(r, CFG).requeued == 1
    assert r.lrange(K.queue("in"), 0, -1) == raws
    assert r.hgetall(K.recoveries) == {message.digest(raws[1]).encode(): b"1"}
    r.delete(K.recoveries)
    indexer = consumer(r, "h/gathering-dead")
    assert indexer.take(gather_items=2) is not None
    r.delete(K.heartbeat("h/gathering-dead"))
    assert reap(r, CFG).requeued == 1
    assert r.hgetall(K.recoveries) == {message.digest(raw).encode(): b"1" for raw in raws}


def test_a_consumer_whose_recoveries_are_not_counted_never_dead_letters_them(r: redis.Redis) -> None:
    """A forwarder's target delivery holds a batch through a whole outage: it dies five times
    (restarts and a reaper alike), the batch is never taken for poison and is delivered."""
    raw = push(r, "in", [{"n": 1}])
    for _ in range(5):
        c = consumer(r, "h/target", counted=False)
        d = c.take()
        assert d is not None and d.raws == [raw] and d.recovered == 0
    r.delete(K.heartbeat("h/target"))
    for _ in range(5):
        assert reap(r, CFG).requeued == 1
        c = consumer(r, "h/target", counted=False)
        assert c.take() is not None
        r.delete(K.heartbeat("h/target"))
    assert not r.hgetall(K.recoveries) and r.llen(K.dead_letters) == 0
    c = consumer(r, "h/target")  # counted again once it says so
    assert c.take() is not None and r.hgetall(K.recoveries) == {message.digest(raw).encode(): b"1"}
