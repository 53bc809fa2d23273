"""Fault scenarios 21 and on: the ways an audit found to lose or double a line, each for real.

Numbers continue the table of README.md, "Guarantees"; each scenario joins the summary table.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.faults import Pipeline, Scenario, alive
from tests.support.servers import RedisServer, wait_for
from tests.support.tracker_server import TrackerServer

pytestmark = pytest.mark.slow


def snapshot_redis(tmp_path: Path) -> RedisServer:
    """A Redis that persists only by explicit SAVE: restarted, it comes back as the snapshot."""
    return RedisServer(tmp_path / "redis", None, "--appendonly", "no", "--save", "").start()


@pytest.mark.parametrize("truncated", [False, True], ids=["idle", "truncated-meanwhile"])
def test_21_redis_restarted_from_an_older_snapshot_while_the_watcher_idles(
        truncated: bool, es_url: str, tracker: TrackerServer, tmp_path: Path) -> None:
    """100 lines committed, SAVE, 10 more committed (after a truncation of the log in the
    second case), Redis SIGKILLed and started again from the snapshot while the watcher idles
    (its client reconnects without an error), 5 more lines (written while Redis is down in the
    second case): all 115 arrive once."""
    title = ("21 Redis back from an older snapshot, watcher idle" if not truncated else
             "21b older snapshot, log truncated in the forgotten window")
    scenario = Scenario(title)
    server = snapshot_redis(tmp_path)
    pipe = Pipeline(tmp_path, server.url, es_url, tracker, sinks=("file", "es")).start()
    try:
        pipe.write(100)
        pipe.wait_delivered()
        server.client().save()
        if truncated:
            os.truncate(pipe.log, 0)
            time.sleep(1.5)  # the watcher sees the truncation (and commits the new state)
        pipe.write(10)
        wait_for(lambda: len(pipe.seen("file")) >= 110, what="110 lines through")
        time.sleep(1)  # everything acknowledged, the watcher idle
        server.kill()
        if truncated:
            pipe.write(5)  # read while Redis is away
            time.sleep(1)
        server.start()
        if not truncated:
            time.sleep(1)
            pipe.write(5)
        pipe.wait_delivered()
        alive(pipe)
        log = pipe.workers["logger_access"].logfile.read_text()
        assert "Redis lost the position" in log or "reading it again from where" in log or truncated
        pipe.check(scenario, note="Redis forgot 10 acknowledged lines; re-read")
    finally:
        pipe.stop()
        server.kill()


def test_22_lines_near_a_megabyte_each_travel_in_messages_of_their_own(
        redis_server: RedisServer, r, es_url: str, tracker: TrackerServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """70 access lines of 999,000 bytes (the default max_line_bytes is 1 MiB): before, they
    became one 70 MB message, dead-lettered as over the cap and cut to 1 MiB, the offset past
    them: lost. Now every message stays under the cap and each line arrives once."""
    from tests.support.faults import UA

    scenario = Scenario("22 70 lines of 999 KB each")
    pipe = Pipeline(tmp_path, redis_server.url, es_url, tracker, sinks=("file", "es")).start()
    try:
        with pipe.log.open("a") as handle:
            for n in range(70):
                head = (f'192.0.2.{n % 250 + 1} - - [10/Oct/2024:13:55:36 +0200] '
                        f'"GET /bitstream/handle/123456789/{n}/f.pdf?seq={n}&pad=')
                tail = f' HTTP/1.1" 200 1234 "-" "{UA}"'
                handle.write(head + "x" * (999_000 - len(head) - len(tail)) + tail + "\n")
        pipe.written = 70
        pipe.write(30)
        pipe.wait_delivered(timeout=240)
        alive(pipe)
        biggest = max((len(raw) for raw in r.lrange("{loglines}:dlq", 0, -1)), default=0)
        assert biggest == 0, "something was dead-lettered"
        pipe.check(scenario, note="one message per line")
    finally:
        pipe.stop()


def test_23_elasticsearch_hanging_the_indexer_stops_in_time_and_kills_count_no_recovery(
        redis_server: RedisServer, r, es_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A node that takes the bulk request and never answers: SIGTERM stops the indexer within
    stopwaitsecs (its request_timeout must end 5 s within it); three times supervisord's
    SIGKILL comes first (a stop, not a crash: no recovery counted), and when the node answers
    again every record is indexed once, none dead-lettered as poison."""
    import signal
    import textwrap

    from elasticsearch import Elasticsearch

    from pipeline.core import message
    from pipeline.core.keys import Keys
    from tests.support.faults import es_seen
    from tests.support.procs import Worker
    from tests.support.proxy import BlackHole

    scenario = Scenario("23 Elasticsearch hangs: indexer stopped, killed 3x")
    hole = BlackHole()
    index = f"hang-{os.getpid()}"
    cfg = tmp_path / "loglines.cfg"

    def write_cfg(hosts: str) -> None:
        cfg.write_text(textwrap.dedent(f"""
            [redis]
            url = {redis_server.url}
            heartbeat_ttl = 3
            [worker_es]
            type = esindexer
            listento = docs
            hosts = {hosts}
            index = {index}
            request_timeout = 10
            stopwaitsecs = 15
        """))

    write_cfg(hole.url)
    keys = Keys()
    r.rpush(keys.queue("docs"), message.encode([{"seq": n, "service": "t", "src": "s", "off": n}
                                               for n in range(100)]))
    logs = tmp_path / "logs"
    logs.mkdir()
    es = Elasticsearch(es_url, request_timeout=30)
    try:
        worker = Worker(cfg, "worker_es", logs).start()
        wait_for(lambda: hole.requests >= 1, what="the bulk request sent into the hole")
        started = time.monotonic()
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=30) == 0
        took = time.monotonic() - started
        assert took < 15, f"the indexer outstayed stopwaitsecs: {took:.1f}s"
        for kill in range(3):  # stopped, but SIGKILLed before it handed its batch back
            seen = hole.requests
            worker = Worker(cfg, "worker_es", logs).start()
            wait_for(lambda s=seen: hole.requests > s, what=f"bulk request {kill + 2} in the hole")
            worker.proc.send_signal(signal.SIGTERM)
            time.sleep(1)
            worker.kill(signal.SIGKILL)
        assert r.llen(keys.dead_letters) == 0 and not r.hgetall(keys.recoveries)
        write_cfg(es_url)
        worker = Worker(cfg, "worker_es", logs).start()
        wait_for(lambda: len(es_seen(es, index, "seq")) >= 100, timeout=60, what="100 documents")
        time.sleep(1)
        worker.stop()
        assert r.llen(keys.dead_letters) == 0
        scenario.check("es", es_seen(es, index, "seq"), 100, note=f"SIGTERM to exit {took:.1f}s")
    finally:
        hole.close()
        es.options(ignore_status=404).indices.delete(index=index)
        es.close()
