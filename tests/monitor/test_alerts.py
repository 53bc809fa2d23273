"""Alert scenarios against a real webhook recorder and the test SMTP server: a worker made FATAL
under a real supervisord, a growing queue, Elasticsearch stopped and started again, reminders
and a restart of the monitor in the middle of an alert, and 600 rounds of checks of a healthy
pipeline that send nothing."""

from __future__ import annotations

import fcntl
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.core.keys import Keys
from tests.support.monitoring import get, samples, value
from tests.support.procs import REPO, Worker
from tests.support.servers import RedisServer, free_port, wait_for
from tests.support.smtp_server import SmtpServer
from tests.support.webhook_server import WebhookServer

K = Keys()


@pytest.fixture
def hook() -> Iterator[WebhookServer]:
    server = WebhookServer()
    yield server
    server.close()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    yield server
    server.close()


def monitor_section(port: int, hook: WebhookServer, smtp: SmtpServer, extra: str = "", check_s: float = 0.25) -> str:
    return f"""
[worker_monitor]
type = monitor
listen = 127.0.0.1:{port}
check_s = {check_s}
sample_s = 0.25
webhook_url = {hook.url}
smtp_host = 127.0.0.1
smtp_port = {smtp.port}
mail_to = ops@example.org
{extra}
"""


def loglines(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "-c", str(cfg), *args], capture_output=True,
                          text=True, timeout=180, cwd=REPO)


def supervised(tmp_path: Path, redis_url: str, body: str) -> Path:
    path = tmp_path / "loglines.cfg"
    path.write_text(f"[supervisor]\nport = {free_port()}\npassword = pw\n\n[redis]\nurl = {redis_url}\n"
                    f"heartbeat_ttl = 3\n\n[loglines]\nexternal_queues = incoming\n{body}")
    return path


def down(cfg: Path) -> None:
    loglines(cfg, "down")
    wait_for(lambda: not (cfg.parent / "var" / "supervisord.pid").exists(), timeout=60, what="supervisord to exit")


def about(texts: list[str], rule: str) -> list[str]:
    return [t for t in texts if f" {rule}:" in t]


def test_a_worker_made_fatal_and_a_growing_queue_each_fire_once_and_resolve_once(
        tmp_path: Path, redis_server, r: redis.Redis, hook: WebhookServer, smtp: SmtpServer) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    out = tmp_path / "out.log"
    cfg = supervised(tmp_path, redis_server.url, f"""
[logger_out]
type = filelogger
listento = parsed
logfile = {out}
startsecs = 10
startretries = 1

[worker_parse]
type = parser
listento = raw
pushto = parsed
plugin = accesslog
""" + monitor_section(port, hook, smtp, "process_down_for_s = 1\nqueue_growing_for_s = 3\nqueue_growth_min = 20\n"))
    held = open(out, "a")  # another writer holds the file's lock: the file logger stops at start
    fcntl.flock(held, fcntl.LOCK_EX)
    assert loglines(cfg, "up").returncode == 0, "up failed"
    ctl = [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(tmp_path / "supervisord.conf")]
    try:
        wait_for(lambda: about(hook.texts(), "process_not_running"), timeout=60, what="the FATAL alert")
        # named in the state it was in when down for process_down_for_s (1 s): FATAL, or on a slow
        # host the BACKOFF before it (supervisord's wait before its retry outlasts that second)
        assert re.search(r"logger_out is (FATAL|BACKOFF) in supervisord", about(hook.texts(), "process_not_running")[0])
        fcntl.flock(held, fcntl.LOCK_UN)
        held.close()
        subprocess.run(ctl + ["start", "logger_out"], capture_output=True, timeout=60, check=True)
        wait_for(lambda: len(about(hook.texts(), "process_not_running")) == 2, timeout=30, what="resolved")
        assert "RESOLVED" in about(hook.texts(), "process_not_running")[1]

        for _ in range(16):  # a producer of our own, faster than nobody reads
            r.rpush(K.queue("incoming"), *[b'{"n": 1}'] * 5)
            time.sleep(0.25)
        wait_for(lambda: about(hook.texts(), "queue_growing"), timeout=20, what="the growing queue")
        time.sleep(4)  # it stopped growing: over a window it is flat
        wait_for(lambda: len(about(hook.texts(), "queue_growing")) == 2, timeout=20, what="resolved")
        time.sleep(2)  # nothing more comes: one message at the start, one at the end
        fatal, growing = about(hook.texts(), "process_not_running"), about(hook.texts(), "queue_growing")
        assert [t.split()[2] for t in fatal + growing] == ["FIRING", "RESOLVED", "FIRING", "RESOLVED"], hook.texts()
        assert "queue incoming grew to" in growing[0]
        assert len(hook.bodies) == 4 and all(set(b) == {"text"} for b in hook.bodies)  # Slack's body
        subjects = [m["Subject"] for m in smtp.messages]
        assert len(subjects) == 4 and subjects[0].startswith("[loglines ") and "FIRING process_not_running" in subjects[0]
        assert "logger_out" in smtp.messages[0].get_payload()
    finally:
        down(cfg)


def test_alert_state_survives_a_restart_of_the_monitor_and_reminders_come_every_remind_s(
        write_cfg, r: redis.Redis, tmp_path: Path, hook: WebhookServer, smtp: SmtpServer) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    cfg = write_cfg("[loglines]\nexternal_queues = incoming\n" + monitor_section(
        port, hook, smtp, "queue_max_messages = 10\nremind_s = 2\nwebhook_format = json\n"
        "disabled_rules = supervisord_down\n"))
    r.rpush(K.queue("incoming"), *[b"{}"] * 11)
    monitor = Worker(cfg, "worker_monitor", tmp_path).start()
    try:
        wait_for(lambda: hook.bodies, timeout=30, what="the first message")
        first = hook.bodies[0]
        assert first["status"] == "firing" and first["rule"] == "queue_over" and first["alert"] == "queue_over:incoming"
        assert {"summary", "since", "host", "at", "text"} <= set(first)
        # a reminder, by both channels: a kill between the webhook's post and the mail would make
        # the next process send that reminder again by both, one channel then holding one more
        wait_for(lambda: len(hook.bodies) >= 2 and len(smtp.messages) == len(hook.bodies), timeout=10,
                 what="a reminder by both channels")
        assert hook.bodies[1]["status"] == "reminder"
        monitor.kill()  # SIGKILL in the middle of the alert, between two of its messages
        reminded = len(hook.bodies)
        monitor.start()
        time.sleep(1.2)  # rounds of checks of the new process, within remind_s of the last message
        assert [b["status"] for b in hook.bodies[reminded:]] in ([], ["reminder"])
        assert sum(b["status"] == "firing" for b in hook.bodies) == 1  # never told twice it started
        r.delete(K.queue("incoming"))
        wait_for(lambda: hook.bodies[-1]["status"] == "resolved", timeout=10, what="resolved")
        time.sleep(2.5)
        assert [b["status"] for b in hook.bodies].count("resolved") == 1 and hook.bodies[-1]["status"] == "resolved"
        assert len(smtp.messages) == len(hook.bodies)  # every message went both ways
    finally:
        monitor.stop()


def test_the_monitors_own_redis_killed_fires_one_message_and_resolves_with_one(
        write_cfg, tmp_path: Path, hook: WebhookServer, smtp: SmtpServer) -> None:  # type: ignore[no-untyped-def]
    """The Redis the alerts are kept in is the one that dies: the alert lives in the process
    until that Redis answers again, and its end is told too."""
    own = RedisServer(tmp_path / "own-redis").start()
    port = free_port()
    cfg = write_cfg(monitor_section(port, hook, smtp, "webhook_format = json\n"
                                    "disabled_rules = supervisord_down, heartbeat_stale\n"),
                    redis_section=f"[redis]\nurl = {own.url}\nheartbeat_ttl = 3\n")
    monitor = Worker(cfg, "worker_monitor", tmp_path).start()
    health = f"http://127.0.0.1:{port}/healthz"
    try:
        wait_for(lambda: get(health, ("admin", "test-password"))[0] == 200, timeout=30, what="healthy")
        own.kill()
        wait_for(lambda: hook.bodies, timeout=30, what="the firing message")
        assert [(b["status"], b["alert"]) for b in hook.bodies] == [("firing", "redis_unreachable:redis")]
        assert "holds the monitor's state" in hook.bodies[0]["summary"]
        code, report = get(health, ("admin", "test-password"))
        assert code == 503 and "redis_unreachable:redis" in report.decode()
        time.sleep(2)  # eight more rounds while it is down: no more messages
        assert len(hook.bodies) == 1 and len(smtp.messages) == 1
        own.start()  # the same port and files: the alerts hash it held comes back without this one
        wait_for(lambda: len(hook.bodies) == 2, timeout=30, what="the resolved message")
        assert (hook.bodies[1]["status"], hook.bodies[1]["alert"]) == ("resolved", "redis_unreachable:redis")
        wait_for(lambda: get(health, ("admin", "test-password"))[0] == 200, timeout=30, what="healthy again")
        time.sleep(1.5)
        assert len(hook.bodies) == 2 and len(smtp.messages) == 2
        assert own.client().hlen(K.monitor("alerts")) == 0  # told both ways: nothing owed is kept
    finally:
        monitor.stop()
        own.stop()


def test_the_monitors_redis_refusing_writes_mid_alert_tells_each_start_and_end_once(
        write_cfg, tmp_path: Path, hook: WebhookServer, smtp: SmtpServer) -> None:  # type: ignore[no-untyped-def]
    """A queue over its limit fires; then the monitor's Redis refuses writes (out of memory) and
    the queue empties meanwhile: the refusal is an alert of its own, and once Redis takes writes
    again each alert ends once, the queue's from the state Redis kept, the refusal's from the
    process."""
    own = RedisServer(tmp_path / "own-redis").start()
    port = free_port()
    cfg = write_cfg("[loglines]\nexternal_queues = incoming\n" + monitor_section(
        port, hook, smtp, "webhook_format = json\nqueue_max_messages = 10\n"
        "disabled_rules = supervisord_down, heartbeat_stale\n"),
        redis_section=f"[redis]\nurl = {own.url}\nheartbeat_ttl = 3\n")
    client = own.client()
    client.rpush(K.queue("incoming"), *[b"{}"] * 11)
    monitor = Worker(cfg, "worker_monitor", tmp_path).start()
    try:
        wait_for(lambda: hook.bodies, timeout=30, what="the queue's alert")
        client.config_set("maxmemory", "1")  # noeviction: every write refused, reads and DEL served
        wait_for(lambda: len(hook.bodies) == 2, timeout=30, what="the refusal's alert")
        assert (hook.bodies[1]["status"], hook.bodies[1]["alert"]) == ("firing", "redis_unreachable:redis")
        summary = hook.bodies[1]["summary"]  # redis-py names the command when a transaction's is refused
        assert "(OutOfMemoryError): " in summary and "command not allowed when used memory" in summary
        client.delete(K.queue("incoming"))
        time.sleep(1.5)  # rounds that cannot be written: the queue's end waits for them
        assert len(hook.bodies) == 2
        client.config_set("maxmemory", "0")
        wait_for(lambda: len(hook.bodies) == 4, timeout=30, what="both ends")
        time.sleep(1.5)
        assert sorted((b["status"], b["alert"]) for b in hook.bodies) == [
            ("firing", "queue_over:incoming"), ("firing", "redis_unreachable:redis"),
            ("resolved", "queue_over:incoming"), ("resolved", "redis_unreachable:redis")]
        assert len(smtp.messages) == 4 and client.hlen(K.monitor("alerts")) == 0
    finally:
        monitor.stop()
        own.stop()


def test_rounds_whose_alert_write_is_refused_tell_each_start_and_end_once(
        tmp_path: Path, hook: WebhookServer) -> None:
    """Redis answers reads but refuses the alert hash's write (a user without HSET) while two
    alerts fire: a round that cannot be written ends one of them, told once; the first round
    written again neither ends it a second time from the hash's older copy nor loses the other,
    which ends once when its check passes."""
    from pipeline.monitor.alerts import Alerts, Notifier
    from pipeline.monitor.health import Check
    from pipeline.monitor.monitor import MonitorOptions

    own = RedisServer(tmp_path / "own-redis").start()
    try:
        admin = own.client()
        admin.acl_setuser("nohset", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-hset"])
        refused = redis.Redis(port=own.port, username="nohset", password="pw", socket_timeout=5)
        opts = MonitorOptions(webhook_url=hook.url, webhook_format="json")
        alerts = Alerts(admin, K, opts, Notifier(opts))

        def check(queue: str, ok: bool) -> Check:
            return Check(f"queue_over:{queue}", "queue_over", ok, "11 messages")

        assert len(alerts.evaluate([check("incoming", False), check("parsed", False)], 100.0)) == 2
        assert admin.hlen(K.monitor("alerts")) == 2
        alerts.client = refused
        with pytest.raises(redis.ResponseError):
            alerts.evaluate([check("incoming", True), check("parsed", False)], 101.0)
        assert admin.hlen(K.monitor("alerts")) == 2  # the hash: both firing
        alerts.client = admin
        firing = alerts.evaluate([check("incoming", True), check("parsed", False)], 102.0)
        assert [a.id for a in firing] == ["queue_over:parsed"] and not alerts.unsaved
        assert alerts.evaluate([check("incoming", True), check("parsed", True)], 103.0) == []
        assert alerts.evaluate([check("incoming", True), check("parsed", True)], 104.0) == []
        assert sorted((b["status"], b["alert"]) for b in hook.bodies) == [
            ("firing", "queue_over:incoming"), ("firing", "queue_over:parsed"),
            ("resolved", "queue_over:incoming"), ("resolved", "queue_over:parsed")]
        assert admin.hlen(K.monitor("alerts")) == 0
    finally:
        own.stop()


@pytest.mark.slow
def test_elasticsearch_stopped_fires_one_message_and_resolves_with_one(
        write_cfg, r: redis.Redis, tmp_path: Path, es_node_factory, hook: WebhookServer, smtp: SmtpServer) -> None:  # type: ignore[no-untyped-def]
    node = es_node_factory()
    port = free_port()
    cfg = write_cfg(textwrap.dedent(f"""
        [worker_es]
        type = esindexer
        listento = events
        hosts = {node.url}
        index = events
        request_timeout = 5
        max_backoff = 2
    """) + monitor_section(port, hook, smtp, "es_down_for_s = 1\nwebhook_format = json\n"
                           "disabled_rules = supervisord_down, heartbeat_stale, process_not_running\n", check_s=1))
    workers = [Worker(cfg, "worker_es", tmp_path).start(), Worker(cfg, "worker_monitor", tmp_path).start()]
    try:
        r.rpush(K.queue("events"), b'[{"n": 1}]')
        wait_for(lambda: r.hget(K.stats, "worker_es") == b"1", timeout=60, what="one document indexed")
        wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz", ("admin", "test-password"))[0] == 200,
                 timeout=30, what="healthy")
        assert hook.bodies == []
        node.stop()
        stopped = time.monotonic()
        r.rpush(K.queue("events"), b'[{"n": 2}]')  # waits in the indexer's hands meanwhile
        wait_for(lambda: hook.bodies, timeout=30, what="the firing message")
        assert time.monotonic() - stopped < 1 + 2 * 1 + 6  # es_down_for_s, two rounds, a ping's timeout
        assert [(b["status"], b["rule"]) for b in hook.bodies] == [("firing", "es_unreachable")]
        code, health = get(f"http://127.0.0.1:{port}/healthz", ("admin", "test-password"))
        assert code == 503 and "es_unreachable:worker_es" in health.decode()
        time.sleep(5)  # more rounds while it is down: no more messages
        assert len(hook.bodies) == 1
        node.start()
        wait_for(lambda: len(hook.bodies) == 2, timeout=60, what="the resolved message")
        assert (hook.bodies[1]["status"], hook.bodies[1]["rule"]) == ("resolved", "es_unreachable")
        wait_for(lambda: r.hget(K.stats, "worker_es") == b"2", timeout=60, what="the held document indexed")
        time.sleep(3)
        assert len(hook.bodies) == 2 and len(smtp.messages) == 2
    finally:
        for w in workers:
            w.stop()


@pytest.mark.slow
def test_600_rounds_of_checks_of_a_healthy_pipeline_send_nothing(
        tmp_path: Path, redis_server, r: redis.Redis, hook: WebhookServer, smtp: SmtpServer) -> None:  # type: ignore[no-untyped-def]
    """600 rounds: ten minutes of checks at check_s = 1 (the default, 15 s, makes it 2.5 hours),
    run at 0.05 s; then one queue over its limit proves the channels were listening."""
    from bench.genlog import lines

    port = free_port()
    access = tmp_path / "access.log"
    access.write_text("")
    cfg = supervised(tmp_path, redis_server.url, f"""
[logger_access]
type = watcher
logfile = {access}
pushto = raw

[worker_parse]
type = parser
listento = raw
pushto = parsed
plugin = accesslog
numprocs = 2

[logger_out]
type = filelogger
listento = parsed
logfile = {tmp_path / 'out.log'}
""" + monitor_section(port, hook, smtp, "queue_max_messages = 5000\nqueue_growing_for_s = 3\n"
                      "queue_growth_min = 100\nremind_s = 0\n", check_s=0.05))
    assert loglines(cfg, "up").returncode == 0
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(base + "/healthz", ("admin", "pw"))[0] == 200, timeout=60, what="healthy")
        start = value(samples(get(base + "/metrics", ("admin", "pw"))[1].decode()), "loglines_monitor_checks_total")
        every = list(lines(20_000, seq=True))
        rounds = 0.0
        for at in range(0, len(every), 500):  # traffic all along
            with access.open("a") as handle:
                handle.write("\n".join(every[at:at + 500]) + "\n")
            time.sleep(0.5)
            rounds = value(samples(get(base + "/metrics", ("admin", "pw"))[1].decode()),
                           "loglines_monitor_checks_total") - start
        wait_for(lambda: value(samples(get(base + "/metrics", ("admin", "pw"))[1].decode()),
                               "loglines_monitor_checks_total") - start >= 600, timeout=120, what="600 rounds")
        assert r.hget(Keys().stats, "logger_out") == b"20000"
        assert hook.bodies == [] and smtp.messages == [], (hook.bodies, rounds)
        r.rpush(K.queue("incoming"), *[b"{}"] * 5001)
        wait_for(lambda: hook.bodies and smtp.messages, timeout=20, what="the queue's alert")
        assert about(hook.texts(), "queue_over") == hook.texts()
    finally:
        down(cfg)
