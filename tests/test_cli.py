"""The loglines command: init, check, dlq, backfill, enable/disable, one-line errors."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest
import redis

from pipeline.cli import main
from pipeline.core import message
from pipeline.core.keys import Keys

K = Keys()


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("init", "check", "supervisord-config", "enable", "disable", "up", "reload", "down",
                    "worker", "status", "dlq", "backfill"):
        assert command in out


def test_init_writes_a_valid_starter_with_a_strong_password(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "loglines.cfg"
    assert main(["-c", str(cfg), "init"]) == 0
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    password = next(line.split("=", 1)[1].strip() for line in cfg.read_text().splitlines()
                    if line.startswith("password"))
    assert len(password) >= 24
    assert main(["-c", str(cfg), "check"]) == 0
    assert "OK (4 workers" in capsys.readouterr().out


def test_init_leaves_an_existing_config_unchanged_and_says_so(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "loglines.cfg"
    assert main(["-c", str(cfg), "init"]) == 0
    first = cfg.read_text()
    capsys.readouterr()
    assert main(["-c", str(cfg), "init"]) == 0
    assert f"{cfg} exists: left unchanged" in capsys.readouterr().out and cfg.read_text() == first


def test_dlq_list_says_when_there_is_nothing(write_cfg, r: redis.Redis, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = str(write_cfg(""))
    assert main(["-c", cfg, "dlq", "list"]) == 0
    assert capsys.readouterr().out == "no dead letters\n"
    assert main(["-c", cfg, "dlq", "list", "--failed"]) == 0
    assert capsys.readouterr().out == "no failed tracker requests\n"


def test_init_creates_a_missing_password_file(tmp_path: Path) -> None:
    cfg = tmp_path / "loglines.cfg"
    cfg.write_text("[supervisor]\npassword_file = var/secret\n")
    assert main(["-c", str(cfg), "init"]) == 0
    secret = tmp_path / "var" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text().strip()) >= 24


def test_errors_are_one_line_without_traceback(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "loglines.cfg"
    cfg.write_text("[worker_p]\ntype = parser\nlistento = a\npushto = b\nplugin = nowhere_to_be_found\n")
    assert main(["-c", str(cfg), "check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "[worker_p]" in err and "'nowhere_to_be_found' not found" in err
    from pipeline.plugin import builtins

    assert builtins() == ["accesslog", "jsonlines", "kontext", "repository"]
    assert "not a built-in (accesslog, jsonlines, kontext, repository)" in err
    cfg.write_text("[worker_p]\ntype = parser\nlistento = a\n")
    assert main(["-c", str(cfg), "check"]) == 1
    assert "key 'pushto': required key is missing" in capsys.readouterr().err


def test_dlq_list_show_replay_purge(write_cfg, r: redis.Redis, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = str(write_cfg(""))
    r.rpush(K.dead_letters, message.dead_letter(reason="bad\nthing", worker="w", queue="in", raw=b'[{"a":1}]'))
    r.rpush(K.dead_letters, message.dead_letter(reason="plugin raised", worker="w", queue="in", item={"b": 2}))
    assert main(["-c", cfg, "dlq", "list"]) == 0
    listing = capsys.readouterr().out
    assert "'bad\\nthing'" in listing and listing.count("\n") == 2
    assert main(["-c", cfg, "dlq", "show", "1"]) == 0
    assert '"b": 2' in capsys.readouterr().out
    assert main(["-c", cfg, "dlq", "replay", "1"]) == 0
    assert [orjson.loads(x) for x in r.lrange(K.queue("in"), 0, -1)] == [[{"b": 2}]]
    assert main(["-c", cfg, "dlq", "replay", "--all", "--to", "elsewhere"]) == 0
    assert r.lrange(K.queue("elsewhere"), 0, -1) == [b'[{"a":1}]'] and r.llen(K.dead_letters) == 0
    r.rpush(K.dead_letters, b"{}")
    assert main(["-c", cfg, "dlq", "purge"]) == 1
    assert main(["-c", cfg, "dlq", "purge", "--yes"]) == 0 and r.llen(K.dead_letters) == 0


def test_backfill_pushes_once_and_resumes(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    cfg = str(write_cfg(""))
    old = tmp_path / "access.log.1"
    old.write_text("".join(f"line {n}\n" for n in range(1234)) + "no newline at the end")
    assert main(["-c", cfg, "backfill", str(old), "--to", "raw", "--quiet"]) == 0
    assert main(["-c", cfg, "backfill", str(old), "--to", "raw", "--quiet"]) == 0  # nothing new
    items = [i for raw in r.lrange(K.queue("raw"), 0, -1) for i in message.decode(raw, 1 << 30)]
    assert len(items) == 1235 and items[-1]["logline"] == "no newline at the end"
    assert items[0]["service"] == "backfill"


def test_enable_and_disable(write_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = str(write_cfg("[logger_out]\ntype = filelogger\nlistento = q\nlogfile = o.log\nenabled = no\n"))
    link = tmp_path / "workers_enabled" / "logger_out.conf"
    assert main(["-c", cfg, "supervisord-config"]) == 0 and not link.exists()
    assert main(["-c", cfg, "enable", "logger_out"]) == 0 and link.is_symlink()
    assert main(["-c", cfg, "disable", "logger_out"]) == 0 and not link.exists()
    assert main(["-c", cfg, "enable", "nope"]) == 1


def test_plugin_options_reach_the_plugin_and_bad_ones_fail_check(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "loglines.cfg"
    base = "[worker_k]\ntype = parser\nlistento = a\npushto = b\nplugin = kontext\n"
    cfg.write_text(base + "opt_timezone = Europe/Prague\n")
    assert main(["-c", str(cfg), "check"]) == 0
    cfg.write_text(base + "opt_timezone = Nowhere/Special\n")
    assert main(["-c", str(cfg), "check"]) == 1
    assert "unknown timezone" in capsys.readouterr().err


def test_robots_update_validates_and_installs(write_cfg, tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pipeline.transforms import robots

    cfg = str(write_cfg(""))
    bad = tmp_path / "bad.json"
    bad.write_text('[{"pattern": "(unclosed"}]')
    assert main(["-c", cfg, "robots", "update", str(bad)]) == 1
    assert "not a usable COUNTER robots list" in capsys.readouterr().err
    good = tmp_path / "good.json"
    good.write_text('[{"pattern": "^MyHarvester"}, {"pattern": "crawl"}]')
    assert main(["-c", cfg, "robots", "update", str(good)]) == 0
    installed = robots.override_path(tmp_path / "var")
    assert robots.load_patterns(installed) == ["^MyHarvester", "crawl"]
    assert robots.RobotFilter(robots.load_patterns(installed)).is_robot("myharvester/1.0")
    monkeypatch.setenv(robots.OVERRIDE_ENV, str(installed))  # what 'loglines worker' does
    robots.counter_robots.cache_clear()
    try:
        assert robots.counter_robots().is_robot("MyHarvester/2") and not robots.counter_robots().is_robot("bingbot")
    finally:
        monkeypatch.delenv(robots.OVERRIDE_ENV)
        robots.counter_robots.cache_clear()


def test_status_dlq_reap_and_backfill_see_every_redis_server(write_cfg, r: redis.Redis, tmp_path: Path,
                                                            capsys) -> None:  # type: ignore[no-untyped-def]
    from tests.support.servers import RedisServer

    second = RedisServer(tmp_path / "redis-b").start()
    try:
        r2 = second.client()
        cfg = str(write_cfg(f"""
            [redis_b]
            url = {second.url}
            heartbeat_ttl = 3

            [worker_a]
            type = parser
            listento = qa
            pushto = out_a
            plugin = jsonlines

            [worker_b]
            type = parser
            listento = qb
            pushto = out_b
            plugin = jsonlines
            redis = redis_b
        """))
        r.rpush(K.dead_letters, message.dead_letter(reason="on a", worker="w", queue="qa", item={"n": 0}))
        for n in (1, 2):
            r2.rpush(K.dead_letters, message.dead_letter(reason=f"on b {n}", worker="w", queue="qb",
                                                         item={"n": n}))
        r2.rpush(K.queue("qb"), b'{"x": 1}', b'{"x": 2}')
        r2.rpush(K.failed, b'{"reason": "parked"}')

        assert main(["-c", cfg, "status", "--json"]) == 0
        status = orjson.loads(capsys.readouterr().out)
        assert status["queues"]["qb"] == 2 and status["queues"]["qa"] == 0
        assert status["dead_letters"] == 3 and status["failed"] == 1
        assert status["redis"]["redis_b"] == {"dead_letters": 2, "failed": 1, "warnings": [], "reachable": True}

        assert main(["-c", cfg, "dlq", "list"]) == 0
        listing = capsys.readouterr().out.splitlines()
        assert len(listing) == 3 and "[redis]" in listing[0] and "[redis_b]" in listing[2]
        assert main(["-c", cfg, "dlq", "replay", "2"]) == 0  # the second entry of redis_b
        assert r2.lrange(K.queue("qb"), -1, -1) == [b'[{"n":2}]'] and r2.llen(K.dead_letters) == 1
        assert r.llen(K.dead_letters) == 1

        # a dead consumer on the second server: reaped by 'loglines reap'
        r2.hset(K.consumers, "gone/worker_b", K.queue("qb"))
        r2.rpush(K.inflight("gone/worker_b"), b'{"x": 0}')
        assert main(["-c", cfg, "reap"]) == 0
        assert "[redis_b] requeued 1" in capsys.readouterr().out
        assert r2.lindex(K.queue("qb"), 0) == b'{"x": 0}'

        old = tmp_path / "old.log"
        old.write_text("a\nb\n")
        assert main(["-c", cfg, "backfill", str(old), "--to", "qb", "--quiet"]) == 0
        items = [i for raw in r2.lrange(K.queue("qb"), 0, -1) for i in message.decode(raw, 1 << 20)]
        assert [i.get("logline") for i in items[-2:]] == ["a", "b"] and not r.exists(K.queue("qb"))
    finally:
        second.stop()


def test_backfill_stopped_midway_splits_no_line(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    """Interrupted (SIGINT) and run again: every line once, none cut in two (a partial line is
    flushed only at the end of the file)."""
    from pipeline.core.keys import Keys
    from pipeline.core.lifecycle import Flags
    from pipeline.sources import files as files_mod
    from pipeline.sources.backfill import backfill

    class StopAfterFirstPump(Flags):
        looks = 0

        @property  # type: ignore[override]
        def stop(self) -> bool:
            self.looks += 1
            return self.looks > 1

        @stop.setter
        def stop(self, value: bool) -> None:
            pass

    old = tmp_path / "access.log.1"
    old.write_text("".join(f"seq={n} " + "x" * (n % 37) + "\n" for n in range(20_000)))
    budget = files_mod.READ_BUDGET
    files_mod.READ_BUDGET = 4093  # reads end inside lines
    try:
        first = backfill(r, Keys(), [str(old)], "raw", "svc", StopAfterFirstPump(), progress=False)
        assert 0 < first < 20_000
        second = backfill(r, Keys(), [str(old)], "raw", "svc", Flags(), progress=False)
    finally:
        files_mod.READ_BUDGET = budget
    items = [i for raw in r.lrange(K.queue("raw"), 0, -1) for i in message.decode(raw, 1 << 30)]
    assert first + second == 20_000 and not any(i.get("partial") for i in items)
    assert [i["logline"] for i in items] == [f"seq={n} " + "x" * (n % 37) for n in range(20_000)]


def test_check_refuses_an_evicting_redis_and_names_one_without_persistence(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from tests.support.servers import RedisServer

    server = RedisServer(tmp_path / "redis", None, "--maxmemory-policy", "allkeys-lru").start()
    try:
        cfg = tmp_path / "loglines.cfg"
        cfg.write_text(f"[supervisor]\npassword = x\n[redis]\nurl = {server.url}\n"
                       "[worker_b]\ntype = broker\nlistento = a\nfanout = b\n")
        assert main(["-c", str(cfg), "check"]) == 1
        assert "section [redis]: Redis evicts keys (maxmemory-policy allkeys-lru)" in capsys.readouterr().err
        client = server.client()
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("appendonly", "no")
        assert main(["-c", str(cfg), "check"]) == 0
        assert "warning: [redis]: Redis keeps no append-only file" in capsys.readouterr().err
        assert main(["-c", str(cfg), "status"]) == 0
        assert "[redis]: Redis keeps no append-only file" in capsys.readouterr().out
    finally:
        server.stop()


def test_what_redis_holds_is_escaped_in_status_dlq_and_the_reaper_log(write_cfg, r: redis.Redis, capsys,  # type: ignore[no-untyped-def]
                                                                      caplog) -> None:
    cfg = str(write_cfg("[worker_b]\ntype = broker\nlistento = a\nfanout = b\n"))
    forged = "x\n2026-12-01 ERROR pipeline: forged\x1b[31m"
    r.hset(K.consumers, forged, K.queue(forged))
    r.rpush(K.inflight(forged), b'{"n": 1}')
    r.rpush(K.queue(forged), b"{}")
    r.rpush(K.dead_letters, orjson.dumps({"time": forged, "queue": forged, "worker": forged, "reason": "r"}))
    assert main(["-c", cfg, "status"]) == 0
    out = capsys.readouterr().out
    assert "forged" in out and "\x1b" not in out and "\nforged" not in out and "\n2026-12-01 ERROR" not in out
    assert main(["-c", cfg, "dlq", "list"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\x1b" not in out
    assert main(["-c", cfg, "reap"]) == 0
    assert "\x1b" not in caplog.text and "\n2026-12-01 ERROR" not in caplog.text and "forged" in caplog.text


def test_check_warns_of_workers_running_as_root_and_up_keeps_the_password_to_itself(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import os

    cfg = tmp_path / "loglines.cfg"
    cfg.write_text("[supervisor]\npassword_file = var/secret\n"
                   "[worker_b]\ntype = broker\nlistento = a\nfanout = b\n"
                   "[worker_c]\ntype = broker\nlistento = c\nfanout = d\nuser = nobody\n")
    assert main(["-c", str(cfg), "check"]) == 0
    err = capsys.readouterr().err
    if os.geteuid() == 0:
        assert "[worker_b] runs as root" in err and "[worker_c]" not in err
    from pipeline import config
    from pipeline.cli.running import _where_password

    assert main(["-c", str(cfg), "init"]) == 0
    where = _where_password(config.load(cfg))
    secret = (tmp_path / "var" / "secret").read_text().strip()
    assert str(tmp_path / "var" / "secret") in where and secret not in where
