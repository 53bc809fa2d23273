"""Fault scenarios of the forwarder: a site shipping to other loglines nodes over HTTP ingest,
through a fault proxy; every line once at every receiver, whatever fails in between."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from pipeline.core.worker import consumer_id
from tests.support.faults import Scenario
from tests.support.forwarding import Receiver, Site, wait_received
from tests.support.servers import wait_for

pytestmark = pytest.mark.slow


def check(scenario: Scenario, receiver: Receiver, written: int, note: str = "", lost_ok: int = 0) -> None:
    result = scenario.record(f"fwd:{receiver.dir.name}"[:8], receiver.seen(), written, note)
    assert result["duplicated"] == 0 and result["unexpected"] == 0, result
    assert result["lost"] == lost_ok, result


def test_32_target_down_for_minutes_spills_to_the_spool_and_replays_in_order(tmp_path: Path) -> None:
    outage = float(os.environ.get("LOGLINES_FORWARD_OUTAGE_S", "600"))
    scenario = Scenario(f"32 forward: target down {outage / 60:g} min, spool spill")
    receiver = Receiver(tmp_path, "central").start()
    site = Site(tmp_path, [receiver], "queue_max_items = 20\n").start()
    redis_peak = 0
    try:
        site.write(500, pace=0.05)
        wait_received(receiver, 500)
        with receiver.proxy.refusing():
            ends = time.monotonic() + outage
            while time.monotonic() < ends:  # a steady trickle all along: 2 batches a second
                site.write(100)
                queue = site.redis.client().llen("{loglines}:q:forward.worker_fwd.central")
                redis_peak = max(redis_peak, int(queue))
                time.sleep(1)
            figures = site.targets()["central"]
            assert figures["state"] in ("backing off", "spooling") and figures["spool_batches"] > 0
        site.write(200, pace=0.05)
        wait_received(receiver, site.written, timeout=300)
        assert redis_peak <= 20 + 5, f"the backlog in Redis reached {redis_peak} batches"
        check(scenario, receiver, site.written, f"Redis backlog <= {redis_peak} batches, rest spooled")
        assert site.targets()["central"]["spool_batches"] == 0
    finally:
        site.stop()
        receiver.stop()


def test_33_forwarder_killed_after_the_receiver_stored_a_batch_before_the_answer(tmp_path: Path) -> None:
    scenario = Scenario("33 forward: killed between store and answer")
    receiver = Receiver(tmp_path, "central").start()
    site = Site(tmp_path, [receiver]).start()
    try:
        site.write(300, pace=0.05)
        wait_received(receiver, 300)
        receiver.proxy.swallow_reply_to = b"POST"  # the batch is stored; the answer never comes
        site.write(100)
        assert receiver.proxy.swallowed.wait(30)
        site.forwarder.kill(signal.SIGKILL)
        site.forwarder.start()  # it sends that batch again, with its Idempotency-Key
        site.write(300, pace=0.05)
        wait_received(receiver, site.written)
        check(scenario, receiver, site.written, "the resent batch stored once")
    finally:
        site.stop()
        receiver.stop()


def test_34_the_receivers_redis_restarted(tmp_path: Path) -> None:
    scenario = Scenario("34 forward: receiver's Redis SIGKILLed")
    receiver = Receiver(tmp_path, "central").start()
    site = Site(tmp_path, [receiver]).start()
    try:
        site.write(500, pace=0.02)
        receiver.redis.kill()
        site.write(300, pace=0.02)
        time.sleep(2)
        receiver.redis.start()
        site.write(300, pace=0.02)
        wait_received(receiver, site.written)
        check(scenario, receiver, site.written)
    finally:
        site.stop()
        receiver.stop()


def test_35_one_target_down_the_other_at_full_rate(tmp_path: Path) -> None:
    scenario = Scenario("35 forward: one of two targets down")
    up, down = Receiver(tmp_path, "east").start(), Receiver(tmp_path, "west").start()
    site = Site(tmp_path, [up, down]).start()
    try:
        with down.proxy.refusing():
            started = time.monotonic()
            site.write(5000, pace=0.01, chunk=100)
            wait_received(up, site.written, timeout=120)
            took = time.monotonic() - started
            assert len(down.seen()) == 0
        wait_received(down, site.written)
        check(scenario, up, site.written, f"all while the other was down, in {took:.0f} s")
        check(scenario, down, site.written, "after it came back")
    finally:
        site.stop()
        up.stop()
        down.stop()


@pytest.mark.parametrize("when_full", ["block", "drop_oldest"])
def test_36_the_spool_full(when_full: str, tmp_path: Path) -> None:
    scenario = Scenario(f"36 forward: spool full, {when_full}")
    receiver = Receiver(tmp_path, "central").start()
    site = Site(tmp_path, [receiver], f"queue_max_items = 5\nspool_max_bytes = 40k\nwhen_full = {when_full}\n").start()
    try:
        site.write(200, pace=0.05)
        wait_received(receiver, 200)
        with receiver.proxy.refusing():
            site.write(3000, pace=0.02)
            wait_for(lambda: site.targets()["central"]["state"] == "spool full" or
                     site.targets()["central"]["dropped"] > 0, timeout=120, what="the spool full")
            time.sleep(3)
        site.write(100, pace=0.05)
        figures: dict = {}

        def settled() -> bool:
            nonlocal figures
            figures = site.targets()["central"]
            return len(receiver.seen()) + figures["dropped_items"] >= site.written

        wait_for(settled, timeout=240, interval=1, what="the backlog delivered")
        time.sleep(2)
        figures = site.targets()["central"]
        if when_full == "block":
            assert figures["dropped"] == 0
            check(scenario, receiver, site.written, "the backlog waited in Redis; nothing dropped")
        else:
            assert figures["dropped"] > 0
            check(scenario, receiver, site.written, f"{figures['dropped_items']} lines in "
                  f"{figures['dropped']} batches dropped, as counted", lost_ok=figures["dropped_items"])
    finally:
        site.stop()
        receiver.stop()


def test_37_forwarder_killed_three_times_while_its_target_is_down(tmp_path: Path) -> None:
    """A batch in flight waits out the outage: crashes meanwhile are not its doing, so it is
    never taken for poison (the target's deliveries count no recoveries)."""
    scenario = Scenario("37 forward: 3 kill -9 during an outage")
    receiver = Receiver(tmp_path, "central").start()
    site = Site(tmp_path, [receiver]).start()
    client = site.redis.client()
    inflight = site.keys.inflight(f"{consumer_id('worker_fwd')}/central")
    try:
        site.write(100, pace=0.02)
        wait_received(receiver, 100)
        with receiver.proxy.refusing():
            site.write(100, pace=0.02)
            for _ in range(3):
                wait_for(lambda: client.llen(inflight) > 0, timeout=30, what="a batch in flight")
                site.forwarder.kill(signal.SIGKILL)
                site.forwarder.start()
                time.sleep(3)  # the new process takes its in-flight batch back (a recovery)
        site.write(100, pace=0.02)
        wait_received(receiver, site.written)
        assert client.llen(site.keys.dead_letters) == 0, client.lrange(site.keys.dead_letters, 0, -1)
        check(scenario, receiver, site.written, "the batch in flight delivered after 3 crashes")
    finally:
        site.stop()
        receiver.stop()


def test_38_a_damaged_spool_holds_back_its_own_target_alone(tmp_path: Path) -> None:
    scenario = Scenario("38 forward: one target's spool damaged")
    east, west = Receiver(tmp_path, "east").start(), Receiver(tmp_path, "west").start()
    site = Site(tmp_path, [east, west])
    spool = site.dir / "var" / "spool" / "worker_fwd" / "west.sqlite"
    spool.parent.mkdir(parents=True)
    spool.write_bytes(b"not a database " * 100)
    site.start()
    try:
        site.write(300, pace=0.02)
        wait_received(east, 300)
        wait_for(lambda: site.targets().get("west", {}).get("state") == "error", timeout=30,
                 what="west's state saying the error")
        assert "database" in site.targets()["west"]["error"] and len(west.seen()) == 0
        assert site.forwarder.proc is not None and site.forwarder.proc.poll() is None, "the forwarder died"
        spool.rename(spool.with_suffix(".damaged"))  # what an operator does: the file moved aside
        site.write(100, pace=0.02)
        wait_received(west, site.written)
        wait_received(east, site.written)
        assert site.targets()["west"]["state"] == "up"
        check(scenario, west, site.written, "delivered once the file was moved aside")
        check(scenario, east, site.written, "never held back")
    finally:
        site.stop()
        east.stop()
        west.stop()


def test_39_a_spill_the_spool_has_no_room_for_goes_back_to_the_queue(tmp_path: Path) -> None:
    """A crash left four batches in the spill list, and the spool was made smaller meanwhile:
    what does not fit goes back to the head of the target's queue, nothing is dropped."""
    scenario = Scenario("39 forward: spill bigger than the spool")
    receiver = Receiver(tmp_path, "central").start()
    site = Site(tmp_path, [receiver], "spool_max_bytes = 10k\n")
    client = site.redis.client()
    batches = [b'{"batch_id":"b%d-0","items":%s}' % (i, orjson.dumps(
        [{"service": "s", "src": "f", "off": n, "logline": f"seq={n} " + "x" * 40}
         for n in range(i * 100, i * 100 + 100)])) for i in range(4)]
    client.rpush(site.keys.inflight(f"{consumer_id('worker_fwd')}/central/spill"), *batches)
    site.written = 400
    try:
        with receiver.proxy.refusing():
            site.start()
            wait_for(lambda: site.targets().get("central", {}).get("spool_batches", 0) > 0, timeout=30,
                     what="the spill stored")
            queued = client.llen(site.keys.queue("forward.worker_fwd.central"))
            inflight = client.llen(site.keys.inflight(f"{consumer_id('worker_fwd')}/central"))
            assert site.targets()["central"]["spool_batches"] + queued + inflight == 4
        wait_received(receiver, 400)
        check(scenario, receiver, 400, "what the spool had no room for was sent from the queue")
    finally:
        site.stop()
        receiver.stop()


def cli(site: Site, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pipeline", "-c", str(site.cfg), *args], capture_output=True,
                          text=True, cwd=site.cfg.parent, timeout=60)
    return done.stdout + done.stderr


def test_40_a_target_taken_out_of_the_config_keeps_its_backlog_and_says_so(tmp_path: Path) -> None:
    """West is down with a backlog when it is taken out of ``targets``: its batches stay (queue
    and spool), the log, ``status`` and ``check`` name them, and once west is back in the
    config they are all delivered, once."""
    scenario = Scenario("40 forward: a target removed, then back")
    east, west = Receiver(tmp_path, "east").start(), Receiver(tmp_path, "west").start()
    site = Site(tmp_path, [east, west], "queue_max_items = 3\n").start()
    configured = site.cfg.read_text()
    try:
        site.write(100, pace=0.02)
        wait_received(west, 100)
        with west.proxy.refusing():
            site.write(400, pace=0.02)
            wait_received(east, 500)
            wait_for(lambda: site.targets()["west"].get("spool_batches", 0) > 0, timeout=60, what="west spooling")
            site.forwarder.stop()
            site.cfg.write_text(configured.replace(f", west={west.url}", ""))
            site.forwarder.start()
            site.write(100, pace=0.02)
            wait_received(east, 600)
            wait_for(lambda: "west is not in targets any more" in site.forwarder.logfile.read_text(),
                     timeout=30, what="the log naming west")
            found = str(orjson.loads(cli(site, "status", "--json")))
            assert "'west': {'state': 'not in targets'" in found, found[:2000]
            assert "target 'west' is not in targets any more" in cli(site, "check")
            site.forwarder.stop()
            site.cfg.write_text(configured)
            site.forwarder.start()
        wait_received(west, 500)
        check(scenario, east, site.written, "never held back")
        assert len(west.seen()) == 500  # the lines written while it was out of the config are not its
        result = scenario.record("fwd:west", west.seen(), 500, "the backlog delivered once it was back")
        assert result["lost"] == result["duplicated"] == result["unexpected"] == 0, result
    finally:
        site.stop()
        east.stop()
        west.stop()
