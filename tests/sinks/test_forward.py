"""The forwarder's per-target queue takes hostile messages like every other queue: each one that
is not a forwarder batch goes to the dead-letter list with its reason, and the lines flow on."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.support.forwarding import Receiver, Site, wait_received


def test_garbage_in_a_target_queue_is_dead_lettered_and_the_lines_flow_on(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path, "central").start()
    site = Site(tmp_path, [receiver]).start()
    try:
        site.write(100)
        wait_received(receiver, 100)
        client = site.redis.client()
        hostile = [b"not json {", b'[{"service": "x", "logline": "an array, not a batch"}]', b'{"no": "batch id"}']
        client.rpush("{loglines}:q:forward.worker_fwd.central", *hostile)
        site.write(100)
        wait_received(receiver, 200)
        seen = receiver.seen()
        assert sorted(seen) == list(range(200)) and set(seen.values()) == {1}
        dead = [orjson.loads(entry) for entry in client.lrange(site.keys.dead_letters, 0, -1)]
        assert sorted(entry["payload"].encode() for entry in dead) == sorted(hostile), dead
        reasons = sorted(entry["reason"] for entry in dead)
        assert reasons[0] == "not a forwarder batch" and reasons[1] == "not a forwarder batch", reasons
        assert reasons[2].startswith("undecodable message"), reasons
    finally:
        site.stop()
        receiver.stop()
