"""loglines status: what is down and what to do, queues in messages and items, the rate of the
current minute, a watcher's files, a tracker's outcomes; and check on log files not there yet."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import orjson
import redis

from pipeline.cli import main
from pipeline.core import message
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.core.stats import Stats
from pipeline.sources.watcher import Watcher, WatcherOptions
from tests.support.servers import free_port

K = Keys()


def test_status_with_supervisord_and_redis_down_says_what_to_do(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "loglines.cfg"
    path.write_text(f"[supervisor]\npassword = x\n[redis]\nurl = redis://127.0.0.1:{free_port()}/0\n"
                    "[worker_b]\ntype = broker\nlistento = a\nfanout = b\n")
    assert main(["-c", str(path), "status"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("supervisord: not running: `loglines up` starts it\n")
    assert "[redis]: not reachable: start that server or correct the section's url" in out
    assert "Traceback" not in out and "worker_b" in out
    assert main(["-c", str(path), "status", "--json"]) == 1
    status = orjson.loads(capsys.readouterr().out)
    assert status["supervisord"] == "not running" and status["redis"]["redis"]["reachable"] is False
    assert "Connection refused" in status["redis"]["redis"]["error"]

    path.write_text("[supervisor]\npassword = x\n[redis]\nembedded = yes\n"
                    "[worker_b]\ntype = broker\nlistento = a\nfanout = b\n")
    assert main(["-c", str(path), "status"]) == 1
    assert "[redis]: not running: `loglines up` starts it (with supervisord)" in capsys.readouterr().out


def test_queues_in_messages_and_items_estimated_beyond_the_sample(write_cfg, r: redis.Redis, capsys) -> None:  # type: ignore[no-untyped-def]
    from pipeline.monitor import status as status_mod

    cfg = str(write_cfg("[worker_b]\ntype = broker\nlistento = a\nfanout = b\n"))
    run = {"service": "s", "src": "f", "off": 0, "loglines": ["x", "y", "z"]}
    r.rpush(K.queue("a"), orjson.dumps([run, {"one": 1}]), b'{"bare": "record"}', b"not json")
    r.rpush(K.queue("b"), *[orjson.dumps([{"n": 1}, {"n": 2}])] * (status_mod.SAMPLE_MESSAGES + 500))
    assert main(["-c", cfg, "status", "--json"]) == 0
    status = orjson.loads(capsys.readouterr().out)
    assert status["queues"]["a"] == 3 and status["queue_items"]["a"] == {"items": 6, "estimate": False}
    assert status["queues"]["b"] == 1500
    assert status["queue_items"]["b"] == {"items": 3000, "estimate": True}
    assert main(["-c", cfg, "status"]) == 0
    out = capsys.readouterr().out
    assert "QUEUE                  MESSAGES      ITEMS" in out
    assert [line.split() for line in out.splitlines() if line.startswith(("a ", "b "))] == [
        ["a", "3", "6"], ["b", "1500", "~3000"]]
    assert "(~: estimated from the first 1000 messages)" in out
    assert message.count_items(b"[]") == 0


def test_the_rate_includes_the_current_minute(write_cfg, r: redis.Redis, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = str(write_cfg("[worker_b]\ntype = broker\nlistento = a\nfanout = b\n"))
    stats = Stats(r, K, "worker_b")
    stats.add(600)
    stats.flush(force=True)
    assert main(["-c", cfg, "status", "--json"]) == 0
    worker = orjson.loads(capsys.readouterr().out)["workers"]["worker_b"]
    # 600 items over the last five minutes and what went of this one: at least 1.67/s
    assert worker["items_total"] == 600 and 1.6 < worker["items_per_second_5min"] <= 2.0


def test_watched_files_with_offset_size_and_lag_and_those_waited_for(write_cfg, r: redis.Redis, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                     capsys, caplog) -> None:
    log = tmp_path / "access.log"
    log.write_text("one\ntwo\n")
    later = tmp_path / "later" / "*.log"
    cfg = str(write_cfg(textwrap.dedent(f"""
        [logger_access]
        type = watcher
        logfile = {log}, {later}
        pushto = access
    """)))
    assert main(["-c", cfg, "check"]) == 0
    captured = capsys.readouterr()
    assert f"warning: [logger_access] logfile '{later}' matches no file yet: the watcher waits for it" in captured.err
    assert captured.out.rstrip().endswith("warnings above")  # the file, the queue nobody reads, ...

    opts = WatcherOptions(logfile=(str(log), str(later)), pushto="access")
    watcher = Watcher("logger_access", opts, r, K, Flags())
    watcher.load_state()
    with caplog.at_level(logging.WARNING):
        watcher.rescan(first=True)
        watcher.rescan()
    assert caplog.text.count(f"waiting for {later}: no file matches it yet") == 1
    watcher.pump()
    watcher.flush_due(force=True)
    with log.open("a") as handle:
        handle.write("three\n")
    assert main(["-c", cfg, "status", "--json"]) == 0
    worker = orjson.loads(capsys.readouterr().out)["workers"]["logger_access"]
    assert worker["files"] == [{"path": str(log), "offset": 8, "size": 14, "lag": 6}]
    assert worker["waiting_for"] == [str(later)]
    assert main(["-c", cfg, "status"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(str(log)))
    assert row.split() == [str(log), "logger_access", "8", "14", "6"]
    assert f"{later}" in out and "waiting: no file matches it yet" in out
    for tail in watcher.tails.values():
        tail.close()


def test_a_trackers_sent_not_counted_refused_and_retrying(write_cfg, r: redis.Redis, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         capsys) -> None:
    from tests.sinks.test_tracker import line, push_lines, tracker_cfg
    from tests.support.procs import Worker
    from tests.support.servers import wait_for
    from tests.support.tracker_server import TrackerServer

    with TrackerServer() as server:
        server.respond = lambda params: ((400, {}) if "refuse" in params["svc_dat"] else
                                         (503, {}) if "busy" in params["svc_dat"] else (200, {}))
        cfg = tracker_cfg(write_cfg, server.url, "retries = 1\n")
        worker = Worker(cfg, "worker_irus", tmp_path).start()
        try:
            push_lines(r, [line("/1234/1/a.pdf"), line("/1234/1/b.pdf"), line("/static/x.css"),
                           line("/1234/1/refuse.pdf"), line("/1234/1/busy.pdf")])
            wait_for(lambda: r.llen(K.queue("events")) == 0 and r.llen(K.failed) == 1
                     and r.hget(K.stats, "worker_irus:parked"), timeout=30, what="events handled")
            assert main(["-c", str(cfg), "status", "--json"]) == 0
            irus = orjson.loads(capsys.readouterr().out)["workers"]["worker_irus"]
            assert irus["outcomes"] == {"sent": 2, "not_counted": 1, "refused": 1, "parked": 1}
            assert irus["retrying"] == 1 and irus["retrying_estimate"] is False
            assert main(["-c", str(cfg), "status"]) == 0
            assert ("worker_irus: sent 2, not counted 1, refused 1, parked 1, retrying 1 (in the "
                    "failed list)") in capsys.readouterr().out
        finally:
            worker.stop()
