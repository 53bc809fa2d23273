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


@pytest.mark.parametrize("rotation", ["rename", "copytruncate"])
def test_24_file_logger_killed_between_write_and_ack_then_logrotate(
        rotation: str, redis_server: RedisServer, r, es_url: str, tracker: TrackerServer,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    """The batch written but not acknowledged is cut from the file it went to, even when
    logrotate moved or copied that file before the restart: each line once across both."""
    import shutil
    import signal

    from tests.support.faults import start_with
    from tests.support.procs import count_seq

    scenario = Scenario(f"24 file logger killed before ack, then {rotation}")
    pipe = Pipeline(tmp_path, redis_server.url, es_url, tracker, sinks=("file",))
    pipe.start({"logger_out": {"LOGLINES_FAILPOINT": "handled:3"}})
    try:
        pipe.write(1000, pace=0.05, chunk=50)
        victim = pipe.workers["logger_out"]
        assert victim.proc is not None and victim.proc.wait(timeout=60) == -signal.SIGKILL
        rotated = pipe.out.with_name(pipe.out.name + ".1")
        if rotation == "rename":
            pipe.out.rename(rotated)
        else:
            shutil.copyfile(pipe.out, rotated)
            os.truncate(pipe.out, 0)
        start_with(victim, {})
        pipe.write(500, pace=0.02, chunk=50)
        both = lambda: {n: count_seq(pipe.out)[0].get(n, 0) + count_seq(rotated)[0].get(n, 0)  # noqa: E731
                        for n in set(count_seq(pipe.out)[0]) | set(count_seq(rotated)[0])}
        wait_for(lambda: len(both()) >= pipe.written, timeout=120, what="every line in one of the files")
        time.sleep(1.5)
        alive(pipe)
        log = victim.logfile.read_text()
        assert "removing" in log and "unacknowledged batch" in log
        scenario.check("file", both(), pipe.written, note="cut from the rotated file")
    finally:
        pipe.stop()


def test_25_two_file_loggers_on_one_file_are_refused(tmp_path: Path, redis_server: RedisServer) -> None:
    """Two sections with one logfile: refused at load; two processes of one (or of two configs):
    the second cannot take the file's lock and says why."""
    import subprocess
    import sys

    from pipeline import config
    from pipeline.errors import ConfigError
    from tests.support.procs import REPO

    out = tmp_path / "shared.log"
    cfg = tmp_path / "loglines.cfg"
    body = f"[redis]\nurl = {redis_server.url}\n"
    one = f"[logger_a]\ntype = filelogger\nlistento = a\nlogfile = {out}\n"
    cfg.write_text(body + one + f"[logger_b]\ntype = filelogger\nlistento = b\nlogfile = {out}\n")
    with pytest.raises(ConfigError) as info:
        config.load(cfg)
    assert info.value.section == "logger_b" and info.value.key == "logfile" and "[logger_a]" in str(info.value)
    cfg.write_text(body + one)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first = subprocess.Popen([sys.executable, "-m", "pipeline", "-c", str(cfg), "worker", "logger_a"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        from pipeline.core import message
        from pipeline.core.keys import Keys

        client = redis_server.client()
        client.rpush(Keys().queue("a"), message.encode([{"logline": "x"}]))
        wait_for(lambda: out.exists() and out.read_bytes() == b"x\n", what="the first file logger writing")
        other = tmp_path / "other.cfg"  # the same section in another config: another host's, say
        other.write_text(f"[redis]\nurl = {redis_server.url}\nprefix = elsewhere\n" + one)
        second = subprocess.run([sys.executable, "-m", "pipeline", "-c", str(other), "worker", "logger_a"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and f"another process writes {out}" in second.stderr
        assert out.read_bytes() == b"x\n"
    finally:
        first.terminate()
        first.wait(timeout=30)


def test_26_copytruncate_with_a_glob_that_matches_the_copy(redis_server: RedisServer, r, es_url: str,  # type: ignore[no-untyped-def]
                                                           tracker: TrackerServer, tmp_path: Path) -> None:
    """logfile = access.log* (the README's glob for rotated names) and logrotate's copytruncate:
    the copy is a new file whose first bytes are the old file's, recognised and read from where
    the old file was truncated. 100 lines, copytruncate, 10 lines: 110 (before: 210)."""
    import shutil

    scenario = Scenario("26 copytruncate, glob matching the copy")
    pipe = Pipeline(tmp_path, redis_server.url, es_url, tracker, logfile=str(tmp_path / "access.log*"))
    pipe.start()
    try:
        pipe.write(100)
        pipe.wait_delivered()
        pipe.write(20)  # some of these unread when the rotation comes
        shutil.copyfile(pipe.log, tmp_path / "access.log.1")
        os.truncate(pipe.log, 0)
        pipe.write(10)
        pipe.wait_delivered()
        alive(pipe)
        pipe.check(scenario, note="copy read on from the truncation point")
    finally:
        pipe.stop()


def counted(requests: list[tuple[float, dict[str, str], int]]) -> dict[int, int]:
    """Events per sequence number as the tracker counts them: accepted requests, two of the same
    event within 30 seconds of each other counting once (COUNTER's double-click rule)."""
    import re

    last: dict[int, float] = {}
    out: dict[int, int] = {}
    for at, params, status in sorted(requests, key=lambda r: r[0]):
        match = re.search(r"seq=(\d+)", params.get("svc_dat", ""))
        if status != 200 or not match:
            continue
        n = int(match.group(1))
        if n not in last or at - last[n] >= 30:
            out[n] = out.get(n, 0) + 1
        last[n] = at
    return out


def tracker_pipeline(tmp_path: Path, redis_url: str, tracker: TrackerServer, extra: str) -> Path:
    import textwrap

    cfg = tmp_path / "loglines.cfg"
    cfg.write_text(textwrap.dedent(f"""
        [redis]
        url = {redis_url}
        heartbeat_ttl = 3
        socket_timeout = 2
        block_timeout = 0.5
        [worker_irus]
        type = tracker
        listento = to_irus
        repository_plugin = repository
        endpoint_url = {tracker.url}
        pauseonfail = 0.2
        max_backoff = 2
        opt_oai_host = repo.example.ac.uk
        opt_base_url = https://repo.example.ac.uk
    """) + textwrap.dedent(extra))
    return cfg


def push_events(r, count: int) -> None:  # type: ignore[no-untyped-def]
    from pipeline.core import message
    from pipeline.core.keys import Keys
    from tests.support.faults import access_line

    items = [{"service": "repo", "src": "f", "off": n * 1000, "logline": access_line(n)} for n in range(count)]
    r.rpush(Keys().queue("to_irus"), message.encode(items))


def test_27_a_paused_tracker_stops_sending_once_reaped(redis_server: RedisServer, r, tracker: TrackerServer,  # type: ignore[no-untyped-def]
                                                       tmp_path: Path) -> None:
    """Two tracker processes; the one holding the 50-event batch is SIGSTOPped past the
    heartbeat TTL, the other reaps and sends the batch, then the first is continued: it asks
    before every request whether the event was sent and the batch is still its own, and stops
    (before: 90 requests for 50 events)."""
    import signal

    from pipeline.core.keys import Keys
    from tests.support.procs import Worker

    scenario = Scenario("27 tracker paused past its heartbeat, then continued")
    cfg = tracker_pipeline(tmp_path, redis_server.url, tracker, "ratelimit = 0.1\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = [Worker(cfg, "worker_irus", logs, process_name=f"worker_irus_0{n}").start() for n in (1, 2)]
    try:
        wait_for(lambda: r.hlen(Keys().consumers) == 2, what="both trackers at work")
        push_events(r, 50)
        keys = Keys()
        holder = wait_for(lambda: next((w for w in workers if r.llen(keys.inflight(f"{os.uname().nodename}/"
                                                                                   f"{w.process_name}"))), None),
                          what="a tracker holding the batch")
        wait_for(lambda: len(tracker.accepted()) >= 5, what="a few events sent")
        assert holder.proc is not None
        holder.proc.send_signal(signal.SIGSTOP)
        time.sleep(8)
        holder.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: len(counted(tracker.requests)) >= 50, timeout=60, what="50 events counted")
        time.sleep(3)
        requests = len(tracker.accepted())
        scenario.check("tracker", counted(tracker.requests), 50, dup_bound=0,
                       note=f"{requests} requests for 50 events")
        assert requests <= 51, f"{requests} requests for 50 events"
    finally:
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGCONT)
            worker.stop()


def test_28_a_tracker_answering_after_the_timeout_counts_each_event_once(
        redis_server: RedisServer, r, tracker: TrackerServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The tracker records each request but answers after 1.5 s, with timeout = 1: every request
    seems lost. The resend of a request that got no answer goes out within COUNTER's 30 s
    double-click window of the first, where the tracker counts the two as one (before: the
    resends fell outside it, and a parked event replayed an hour later counted twice)."""
    from tests.support.procs import Worker

    scenario = Scenario("28 tracker answering after the timeout")

    slow_until = time.monotonic() + 12

    def slow(params: dict[str, str]) -> tuple[int, dict[str, str]]:
        if time.monotonic() < slow_until:
            time.sleep(1.5)
        return 200, {}

    tracker.respond = slow
    cfg = tracker_pipeline(tmp_path, redis_server.url, tracker, "timeout = 1\nretries = 20\n")
    worker = Worker(cfg, "worker_irus", tmp_path).start()
    try:
        push_events(r, 20)
        wait_for(lambda: r.llen("{loglines}:q:to_irus") == 0 and not r.keys("{loglines}:inflight:*")
                 or r.llen("{loglines}:failed") + len(counted(tracker.requests)) >= 20 and
                 not any(r.llen(k) for k in r.keys("{loglines}:inflight:*")),
                 timeout=240, interval=1, what="every event sent or parked")
        time.sleep(2)
        parked = r.llen("{loglines}:failed")
        scenario.check("tracker", counted(tracker.requests), 20, dup_bound=0,
                       note=f"{len(tracker.requests)} requests for 20 events, {parked} parked")
        assert parked == 0
    finally:
        worker.stop()
