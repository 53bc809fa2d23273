"""Broker and file logger, run as real worker processes against a real Redis."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import redis

from pipeline import config
from pipeline.core.keys import Keys
from pipeline.sinks.filelogger import FileLog, render
from tests.support.procs import Worker
from tests.support.servers import wait_for

K = Keys()


def push(r: redis.Redis, queue: str, items: list[dict]) -> None:
    r.rpush(K.queue(queue), orjson.dumps(items))


def test_broker_copies_each_batch_to_every_fanout_queue(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    cfg = write_cfg("[worker_broker]\ncommand = ./broker.py\nlistento = in\nfanout = a, b\n")
    worker = Worker(cfg, "worker_broker", tmp_path).start()
    try:
        for n in range(50):
            push(r, "in", [{"n": n}])
        wait_for(lambda: r.llen(K.queue("a")) == 50 and r.llen(K.queue("b")) == 50, what="fan-out")
        assert r.lrange(K.queue("a"), 0, -1) == r.lrange(K.queue("b"), 0, -1)
        assert [orjson.loads(x)[0]["n"] for x in r.lrange(K.queue("a"), 0, -1)] == list(range(50))
    finally:
        worker.stop()
    assert worker.proc is not None and worker.proc.returncode == 0


def test_render_raw_ndjson_and_binary() -> None:
    items = [{"logline": "a"}, {"logline": "\\xff", "raw_b64": "/w=="}, {"date": "x"}, {"logline": "x\ny"}]
    assert render(items, "raw") == (b'a\n\xff\n{"date":"x"}\nx\\ny\n', [])
    assert render([{"logline": "a"}], "ndjson") == (b'{"logline":"a"}\n', [])


def test_raw_b64_is_honoured_only_when_it_is_the_line_shown() -> None:
    """A pushed item cannot forge a second line, or bytes other than its logline, into a raw
    file: raw_b64 that holds a newline, does not decode, or is not what logline shows is
    ignored and the logline is written escaped."""
    import base64

    forged = base64.b64encode(b"innocent\n\x1b[31mFORGED admin login\x1b[0m").decode()
    items = [{"logline": "innocent", "raw_b64": forged},
             {"logline": "x", "raw_b64": "not base64!"},
             {"logline": "shown", "raw_b64": base64.b64encode(b"hidden").decode()}]
    data, bad = render(items, "raw")
    assert data == b"innocent\nx\nshown\n" and bad == []


def test_an_item_that_cannot_be_encoded_is_set_aside_not_the_batch() -> None:
    data, bad = render([{"logline": "a"}, {"n": 99999999999999999999}, {"logline": "b"}], "ndjson")
    assert data == b'{"logline":"a"}\n{"logline":"b"}\n'
    assert len(bad) == 1 and bad[0][0] == {"n": 99999999999999999999} and "JSON" in bad[0][1]


def test_unacknowledged_write_is_cut_off_before_the_batch_is_written_again(
    write_cfg, tmp_path: Path, r: redis.Redis  # type: ignore[no-untyped-def]
) -> None:
    out = tmp_path / "out.log"
    cfg = config.load(write_cfg(f"[logger_out]\ntype = filelogger\nlistento = q\nlogfile = {out}\n"))
    opts = cfg.programs["logger_out"].options
    first = FileLog("logger_out", opts, r, K)
    first.trim()
    state = first.write(b"one\n")
    key, field, value = first.saved(state)  # what the acknowledgement sets
    r.hset(key, field, value)
    first.write(b"two\n")  # written, then the process died before acknowledging
    os.close(first.fd)  # (its lock died with it)
    again = FileLog("logger_out", opts, r, K)
    again.trim()
    again.write(b"two\n")
    assert out.read_bytes() == b"one\ntwo\n"


def test_filelogger_sigkill_between_write_and_ack_does_not_double(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out.log"
    cfg = write_cfg(f"[logger_out]\ntype = filelogger\nlistento = q\nlogfile = {out}\n")
    worker = Worker(cfg, "logger_out", tmp_path).start()
    try:
        for batch in range(200):
            push(r, "q", [{"logline": f"seq={batch * 10 + i}"} for i in range(10)])
            if batch in (50, 120):
                worker.restart()
        wait_for(lambda: out.exists() and out.read_text().count("\n") >= 2000, what="2000 lines")
        wait_for(lambda: r.llen(K.queue("q")) == 0, what="queue drained")
        lines = out.read_text().splitlines()
        assert sorted(int(x[4:]) for x in lines) == list(range(2000))
    finally:
        worker.stop()


def test_sighup_reopens_the_file_for_logrotate(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out.log"
    cfg = write_cfg(f"[logger_out]\ntype = filelogger\nlistento = q\nlogfile = {out}\n")
    worker = Worker(cfg, "logger_out", tmp_path).start()
    try:
        push(r, "q", [{"logline": "before"}])
        wait_for(lambda: out.exists() and out.read_text() == "before\n", what="first line")
        out.rename(tmp_path / "out.log.1")
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGHUP)
        push(r, "q", [{"logline": "after"}])
        wait_for(lambda: out.exists() and out.read_text() == "after\n", what="line in the new file")
        assert (tmp_path / "out.log.1").read_text() == "before\n"
    finally:
        worker.stop()


def test_sigterm_stops_workers_promptly_and_cleanly(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out.log"
    cfg = write_cfg(f"[logger_out]\ntype = filelogger\nlistento = q\nlogfile = {out}\n")
    worker = Worker(cfg, "logger_out", tmp_path).start()
    wait_for(lambda: r.hlen(K.consumers) == 1, what="registration")
    assert worker.kill(signal.SIGTERM) == 0
    assert r.exists(K.heartbeat(r.hkeys(K.consumers)[0].decode())) == 0
    assert r.llen(K.inflight(r.hkeys(K.consumers)[0].decode())) == 0


def test_worker_waits_for_redis_instead_of_dying(write_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.servers import RedisServer, free_port

    port = free_port()
    out = tmp_path / "out.log"
    cfg = write_cfg(f"[logger_out]\ntype = filelogger\nlistento = q\nlogfile = {out}\n",
                    redis_section=f"[redis]\nurl = redis://127.0.0.1:{port}/0\nheartbeat_ttl = 3\n")
    worker = Worker(cfg, "logger_out", tmp_path).start()
    server = RedisServer(tmp_path / "late-redis", port)
    try:
        time.sleep(3)
        assert worker.proc is not None and worker.proc.poll() is None  # still alive, retrying
        server.start()
        push(server.client(), "q", [{"logline": "finally"}])
        wait_for(lambda: out.exists() and out.read_text() == "finally\n", timeout=60, what="delivery")
        assert "Redis unavailable" in (tmp_path / "logger_out.log").read_text()
    finally:
        worker.stop()
        server.stop()
