"""Fault injection: each fault happens for real, and the oracle counts every line per sink.

Redis runs with ``appendonly yes`` and ``appendfsync always`` (the ``everysec`` scenario
measures and reports instead). The numbers in the test names follow the list of scenarios in
README.md, "Guarantees".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.support.faults import K, Pipeline, Scenario, alive, start_with
from tests.support.procs import REPO, SEQ
from tests.support.servers import RedisServer, wait_for
from tests.support.tracker_server import TrackerServer

pytestmark = pytest.mark.slow


KILL_POINTS = [
    ("logger_access", "taken"),
    ("worker_fan", "taken"), ("worker_fan", "handled"),
    ("worker_parse", "taken"), ("worker_parse", "handled"),
    ("logger_out", "taken"), ("logger_out", "handled"),
    ("worker_es", "taken"), ("worker_es", "handled"),
    ("worker_irus", "taken"), ("worker_irus", "handled"),
]


@pytest.mark.parametrize(("worker", "point"), KILL_POINTS)
def test_01_02_sigkill_right_after_take_and_between_sink_and_ack(
        worker: str, point: str, redis_server: RedisServer, r, es_url: str, tracker: TrackerServer,
        tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    number = "1" if point == "taken" else "2"
    scenario = Scenario(f"{number} SIGKILL {worker} {'after take' if point == 'taken' else 'after sink, before ack'}")
    pipe = Pipeline(tmp_path, redis_server.url, es_url, tracker)
    try:
        pipe.start({worker: {"LOGLINES_FAILPOINT": f"{point}:3"}})
        pipe.write(1500, pace=0.05, chunk=50)
        victim = pipe.workers[worker]
        assert victim.proc is not None
        assert victim.proc.wait(timeout=60) == -signal.SIGKILL, "the failpoint did not fire"
        victim.start()  # as supervisord would: the same program, without the failpoint
        pipe.write(500, pace=0.05, chunk=50)
        pipe.wait_delivered()
        pipe.check(scenario, tracker_bound=1)
    finally:
        pipe.stop()


@pytest.mark.parametrize("how", ["shutdown", "sigkill"])
def test_05_redis_restarted_under_load(how: str, own_redis: RedisServer, es_url: str,
                                       tracker: TrackerServer, tmp_path: Path) -> None:
    scenario = Scenario(f"5 Redis {'SHUTDOWN' if how == 'shutdown' else 'SIGKILL'} under load, restarted")
    pipe = Pipeline(tmp_path, own_redis.url, es_url, tracker).start()
    try:
        pipe.write(1000, pace=0.05, chunk=50)
        if how == "shutdown":
            own_redis.client().shutdown()
            assert own_redis.proc is not None
            own_redis.proc.wait(timeout=30)
        else:
            own_redis.kill()
        pipe.write(500, pace=0.05, chunk=50)  # written while Redis is down
        time.sleep(2)
        alive(pipe)
        own_redis.start()
        pipe.write(500, pace=0.05, chunk=50)
        pipe.wait_delivered()
        alive(pipe)
        pipe.check(scenario, tracker_bound=2)
    finally:
        pipe.stop()


def test_06_redis_stalled_by_client_pause(own_redis: RedisServer, es_url: str, tracker: TrackerServer,
                                          tmp_path: Path) -> None:
    scenario = Scenario("6 Redis stalled (CLIENT PAUSE 8 s > socket_timeout)")
    pipe = Pipeline(tmp_path, own_redis.url, es_url, tracker).start()
    try:
        pipe.write(800, pace=0.05, chunk=50)
        own_redis.client().client_pause(8000)
        paused_at = time.monotonic()
        pipe.write(400, pace=0.05, chunk=50)
        wait_for(lambda: time.monotonic() - paused_at > 8.5, timeout=20)
        alive(pipe)
        pipe.write(800, pace=0.05, chunk=50)
        pipe.wait_delivered(timeout=120)
        alive(pipe)
        pipe.check(scenario, tracker_bound=2)
    finally:
        pipe.stop()


def test_07_redis_out_of_memory(own_redis: RedisServer, es_url: str, tracker: TrackerServer,
                                tmp_path: Path) -> None:
    from pipeline.core.keys import Keys

    scenario = Scenario("7 Redis out of memory (maxmemory, noeviction)")
    pipe = Pipeline(tmp_path, own_redis.url, es_url, tracker).start()
    admin = own_redis.client()
    offsets = Keys().offsets("logger_access")
    try:
        pipe.write(800, pace=0.05, chunk=50)
        wait_for(lambda: len(pipe.seen("file")) >= 800, what="first lines through")
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)  # every write refused: OOM command not allowed
        before = admin.hgetall(offsets)
        pipe.write(600, pace=0.05, chunk=50)  # refused by Redis: the watcher must hold them
        time.sleep(2)
        assert admin.hgetall(offsets) == before, "an offset advanced while Redis refused writes"
        alive(pipe)
        admin.config_set("maxmemory", 0)
        pipe.write(600, pace=0.05, chunk=50)
        pipe.wait_delivered()
        pipe.check(scenario, tracker_bound=2)
    finally:
        pipe.stop()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small file system of the test's own; skipped (and said) where mounting is forbidden."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine forbids mounting a tmpfs ({done.stderr.strip()}): disk-full "
                    "scenario not run")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system; delete the returned file to give them back."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    block = b"\0" * 65536
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, block[:size])
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_07_redis_aof_disk_full(fsync: str, es_url: str, tracker: TrackerServer, tmp_path: Path) -> None:
    scenario = Scenario(f"7 Redis AOF disk full (appendfsync {fsync})")
    with tmpfs(tmp_path / "redis-disk", "64m") as disk:
        server = RedisServer(disk, None, "--appendfsync", fsync).start()
        pipe = Pipeline(tmp_path, server.url, es_url, tracker).start()
        try:
            pipe.write(600, pace=0.05, chunk=50)
            filler = fill(disk)
            pipe.write(600, pace=0.05, chunk=50)
            time.sleep(2)
            alive(pipe)
            exited = server.proc is not None and server.proc.poll() is not None
            filler.unlink()
            if exited:  # with "always" Redis cannot keep a write it could not log: it stops
                server.start()
            pipe.write(600, pace=0.05, chunk=50)
            pipe.wait_delivered()
            pipe.check(scenario, tracker_bound=2, note="Redis exited" if exited else "MISCONF")
        finally:
            pipe.stop()
            server.kill()


def test_05_everysec_loss_window(es_url: str, tracker: TrackerServer, tmp_path: Path) -> None:
    """With ``appendfsync everysec`` a Redis crash may forget its last second: measured here.

    The watcher re-reads what Redis forgot (its offsets are forgotten with the lines), the file
    logger cuts its file back to the forgotten size, Elasticsearch ids absorb repeats: only the
    tracker may send again.
    """
    scenario = Scenario("5b Redis SIGKILL, appendfsync everysec")
    server = RedisServer(tmp_path / "redis", None, "--appendfsync", "everysec").start()
    pipe = Pipeline(tmp_path, server.url, es_url, tracker).start()
    try:
        pipe.write(1000, pace=0.02, chunk=50)
        server.kill()
        time.sleep(1)
        server.start()
        pipe.write(1000, pace=0.02, chunk=50)
        pipe.wait_delivered()
        rewound = b"Redis lost the position" in pipe.workers["logger_access"].logfile.read_bytes()
        note = "Redis forgot writes; watcher re-read them" if rewound else "Redis forgot nothing this run"
        for sink in pipe.sinks:
            result = scenario.record(sink, pipe.seen(sink), pipe.written, note=note)
            assert result["unexpected"] == 0 and result["lost"] == 0, (sink, result)
            if sink != "tracker":
                assert result["duplicated"] == 0, (sink, result)
    finally:
        pipe.stop()
        server.kill()


def test_12_file_logger_disk_full(redis_server: RedisServer, r, es_url: str, tracker: TrackerServer,
                                  tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scenario = Scenario("12 file logger's disk full")
    with tmpfs(tmp_path / "out-disk", "4m") as disk:
        pipe = Pipeline(tmp_path, redis_server.url, es_url, tracker, sinks=("file",), out_dir=disk).start()
        try:
            pipe.write(600, pace=0.05, chunk=50)
            wait_for(lambda: len(pipe.seen("file")) >= 600, what="first lines written")
            filler = fill(disk)
            pipe.write(600, pace=0.05, chunk=50)
            logfile = pipe.workers["logger_out"].logfile
            wait_for(lambda: b"No space left" in logfile.read_bytes(), what="the file logger to see ENOSPC")
            alive(pipe)
            filler.unlink()
            pipe.write(600, pace=0.05, chunk=50)
            pipe.wait_delivered()
            pipe.check(scenario)
        finally:
            pipe.stop()


MOODY = '''
import os, re, signal, time
from pipeline.plugins import accesslog

def parse(item):
    line = item["logline"]
    if "POISON" in line:
        os.kill(os.getpid(), signal.SIGKILL)  # takes the whole worker down, every time
    n = int(re.search(r"seq=(\\d+)", line).group(1))
    if n % 97 == 13:
        raise ValueError("this plugin does not like %d" % n)
    if n in (700, 1300) and os.environ.get("MOODY_HANG"):
        time.sleep(3600)  # hangs: the per-item time limit must cut it off
    hold = os.environ.get("MOODY_HOLD")
    if hold and os.path.exists(hold + ".arm") and not os.path.exists(hold + ".holding"):
        with open(hold + ".holding", "w") as mark:  # slow but alive: holds its batch until released
            mark.write(str(n))
        deadline = time.monotonic() + 120
        while not os.path.exists(hold + ".release") and time.monotonic() < deadline:
            time.sleep(0.05)
    return accesslog.parse(item)
'''


def moody_pipeline(tmp_path: Path, redis_url: str, es_url: str, tracker: TrackerServer,
                   time_limit: bool = True) -> Pipeline:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "moody.py").write_text(MOODY)
    return Pipeline(tmp_path, redis_url, es_url, tracker, sinks=("file",), plugin="moody",
                    parse_extra="plugin_timeout_s = 1" if time_limit else "")


def test_17_plugin_raising_and_hanging(redis_server: RedisServer, r, es_url: str, tracker: TrackerServer,
                                       tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scenario = Scenario("17 plugin raising on some lines, hanging on two")
    pipe = moody_pipeline(tmp_path, redis_server.url, es_url, tracker)
    pipe.start({"worker_parse": {"MOODY_HANG": "1"}})
    try:
        pipe.write(1500, pace=0.02, chunk=50)
        raised = {n for n in range(1500) if n % 97 == 13}
        dead = frozenset(raised | {700, 1300})
        wait_for(lambda: len(pipe.seen("file")) >= 1500 - len(dead), timeout=120, what="the rest delivered")
        time.sleep(1)
        alive(pipe)
        pipe.check(scenario, dead=dead)
        why = {int(SEQ.search(e["item"]["logline"]).group(1)): e["reason"].split(":")[0]
               for e in pipe.dead_letters()}
        assert {n for n, r in why.items() if r == "plugin moody raised PluginTimeout"} == {700, 1300}, why
        assert {n for n, r in why.items() if r == "plugin moody raised ValueError"} == raised, why
        assert all("Traceback" in e["detail"] for e in pipe.dead_letters())
    finally:
        pipe.stop()


def test_18_malformed_queue_payloads(redis_server: RedisServer, r, es_url: str, tracker: TrackerServer,
                                     tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pickle

    from pipeline.core.keys import Keys

    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    scenario = Scenario("18 malformed payloads: broken JSON, wrong schema, huge, pickle")
    pipe = Pipeline(tmp_path, redis_server.url, es_url, tracker).start()
    hostile = [b'[{"service": "x", "logline": "unterminated', b'{"no": "logline"}', b"[1, 2, 3]",
               b'"just a string"', b"x" * (65 * 1024 * 1024), pickle.dumps(Trap())]
    try:
        pipe.write(500, pace=0.02, chunk=50)
        for raw in hostile:
            r.rpush(Keys().queue("raw"), raw)
        pipe.write(500, pace=0.02, chunk=50)
        pipe.wait_delivered()
        alive(pipe)
        entries = pipe.dead_letters()
        assert len(entries) == len(hostile), [e["reason"] for e in entries]
        assert all(e["reason"] for e in entries)
        assert not marker.exists(), "a pickle was unpickled"
        r.delete(Keys().dead_letters)
        pipe.check(scenario, tracker_bound=0, note=f"{len(hostile)} payloads dead-lettered")
    finally:
        pipe.stop()


def restart_until_poison_is_dead_lettered(pipe: Pipeline) -> int:
    """Start the parser again each time it dies (what supervisord does) until a batch is
    dead-lettered as poison; how many times it died."""
    parser = pipe.workers["worker_parse"]
    deaths = 0
    deadline = time.monotonic() + 120
    while not any("poison" in e["reason"] for e in pipe.dead_letters()):
        assert time.monotonic() < deadline, "the poison batch was never dead-lettered"
        assert parser.proc is not None
        if parser.proc.poll() is not None:
            deaths += 1
            parser.start()
        time.sleep(0.2)
    return deaths


def test_19_poison_payload_killing_the_worker_every_time(redis_server: RedisServer, r, es_url: str,
                                                         tracker: TrackerServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.core import message
    from pipeline.core.keys import Keys

    scenario = Scenario("19 poison payload: kills the parser every time")
    pipe = moody_pipeline(tmp_path, redis_server.url, es_url, tracker).start()
    try:
        pipe.write(200, pace=0.02, chunk=50)
        r.rpush(Keys().queue("raw"), message.encode([{"service": "evil", "logline": "GET /POISON"}]))
        pipe.write(200, pace=0.02, chunk=50)
        deaths = restart_until_poison_is_dead_lettered(pipe)
        assert deaths == 3, deaths
        pipe.write(200, pace=0.02, chunk=50)
        dead = frozenset(n for n in range(600) if n % 97 == 13)
        wait_for(lambda: len(pipe.seen("file")) >= 600 - len(dead), timeout=60, what="the rest delivered")
        time.sleep(1)
        poison = [e for e in pipe.dead_letters() if "poison" in e["reason"]]
        assert len(poison) == 1 and b"POISON" in message.dead_letter_payload(poison[0])
        r.lrem(Keys().dead_letters, 1, orjson.dumps(poison[0]))
        alive(pipe)
        pipe.check(scenario, dead=dead, note=f"dead-lettered after {deaths} deaths")
    finally:
        pipe.stop()


def test_19_poison_payload_with_batches_queued_behind_it(redis_server: RedisServer, r, es_url: str,
                                                         tracker: TrackerServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The poison batch in a full queue, where the parser handles each batch while the one
    before is being acknowledged: the poison alone is dead-lettered, after three deaths, and
    every batch around it is delivered once."""
    from pipeline.core import message
    from pipeline.core.keys import Keys

    scenario = Scenario("19 poison payload in a full queue: it alone is dead-lettered")
    pipe = moody_pipeline(tmp_path, redis_server.url, es_url, tracker).start()
    parser, to_parse = pipe.workers["worker_parse"], Keys().queue("to_parse")
    try:
        parser.stop()
        wait_for(lambda: parser.proc is not None and parser.proc.poll() is not None, what="the parser stopped")

        def queued() -> int:
            return sum(message.count_items(raw) for raw in r.lrange(to_parse, 0, -1))

        pipe.write(1000, chunk=100)
        wait_for(lambda: queued() == 1000, timeout=60, what="1000 lines queued for the parser")
        r.rpush(to_parse, message.encode([{"service": "evil", "logline": "GET /POISON"}]))
        pipe.write(1000, chunk=100)
        wait_for(lambda: queued() == 2001, timeout=60, what="1000 more queued behind the poison")
        parser.start()
        deaths = restart_until_poison_is_dead_lettered(pipe)
        assert deaths == 3, deaths
        dead = frozenset(n for n in range(2000) if n % 97 == 13)
        wait_for(lambda: len(pipe.seen("file")) >= 2000 - len(dead), timeout=60, what="the rest delivered")
        time.sleep(1)
        poison = [e for e in pipe.dead_letters() if "poison" in e["reason"]]
        assert len(poison) == 1 and message.dead_letter_payload(poison[0]) == message.encode(
            [{"service": "evil", "logline": "GET /POISON"}])
        r.lrem(Keys().dead_letters, 1, orjson.dumps(poison[0]))
        alive(pipe)
        pipe.check(scenario, dead=dead, note=f"dead-lettered after {deaths} deaths, 20 batches around it")
    finally:
        pipe.stop()


def test_20_two_reapers_and_a_slow_live_worker(redis_server: RedisServer, r, es_url: str,
                                               tracker: TrackerServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A parser holding its batch far longer than the heartbeat TTL keeps it while reapers run;
    orphans of killed parsers are requeued once, however many reapers race for them."""
    from tests.support.procs import Worker

    scenario = Scenario("20 two reapers racing, a slow but live worker")
    pipe = moody_pipeline(tmp_path, redis_server.url, es_url, tracker, time_limit=False)
    hold = str(tmp_path / "hold")
    doomed = [Worker(pipe.cfg, "worker_parse", pipe.logs, process_name=f"worker_parse_0{n}") for n in (1, 2)]
    try:
        pipe.start({"worker_parse": {"MOODY_HOLD": hold}})
        for n, worker in enumerate(doomed):
            start_with(worker, {"LOGLINES_FAILPOINT": f"taken:{n + 3}"})
        while any(w.proc is not None and w.proc.poll() is None for w in doomed):  # until both died
            assert pipe.written < 5000, "the failpoints did not fire"
            pipe.write(100, pace=0.05, chunk=50)
        for worker in doomed:
            assert worker.proc is not None and worker.proc.wait(timeout=60) == -signal.SIGKILL
        Path(hold + ".arm").touch()  # the live parser now stops inside the next line it parses
        pipe.write(100, pace=0.05, chunk=50)
        wait_for(lambda: os.path.exists(hold + ".holding"), timeout=60, what="the live parser holding a batch")
        time.sleep(4)  # longer than the heartbeat TTL (3 s): only the heartbeat says it is alive
        for _ in range(8):  # two reapers at once, again and again, while it holds the batch
            reapers = [subprocess.Popen([sys.executable, "-m", "pipeline", "-c", str(pipe.cfg), "reap"],
                                        stdout=subprocess.PIPE, cwd=tmp_path,
                                        env=dict(os.environ, PYTHONPATH=str(REPO))) for _ in range(2)]
            for reaper in reapers:
                assert reaper.wait(timeout=60) == 0
        held = [c.decode() for c in r.hkeys(K.consumers)
                if r.exists(K.heartbeat(c.decode())) and r.llen(K.inflight(c.decode()))]
        assert len(held) == 1, "the live parser's batch was taken from it"
        Path(hold + ".release").touch()
        pipe.write(500, pace=0.05, chunk=50)
        dead = frozenset(n for n in range(pipe.written) if n % 97 == 13)
        wait_for(lambda: len(pipe.seen("file")) >= pipe.written - len(dead), timeout=120, what="everything")
        time.sleep(1)
        slow_log = pipe.workers["worker_parse"].logfile.read_text()
        assert "refused or uncertain" not in slow_log, "the live worker's batch was taken from it"
        assert "reaped while we worked" not in slow_log
        pipe.check(scenario, dead=dead, note="2 orphans; 16 reaper runs while a batch was held")
    finally:
        Path(hold + ".release").touch()
        for worker in doomed:
            worker.stop()
        pipe.stop()


def test_untrusted_text_in_our_own_logs_is_escaped(write_cfg, r, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A file name is attacker-controlled text: it cannot forge or colour a line of our log."""
    from tests.support.procs import Worker

    watched = tmp_path / "logs-in"
    watched.mkdir()
    forged = "x\r\n2026-01-01 00:00:00,000 ERROR pipeline.watcher: forged\x1b[31m\x07.log"
    (watched / forged).write_text("a line\n")
    cfg = write_cfg(f"[logger_access]\ntype = watcher\nlogfile = {watched}/*.log\npushto = raw\n")
    worker = Worker(cfg, "logger_access", tmp_path).start()
    try:
        wait_for(lambda: worker.logfile.exists() and b"tailing" in worker.logfile.read_bytes(),
                 what="the watcher to log the file")
    finally:
        worker.stop()
    text = worker.logfile.read_bytes()
    assert b"\x1b" not in text and b"\x07" not in text and b"\r" not in text
    assert not any(row.startswith(b"2026-01-01") for row in text.splitlines())
    assert b"x\\r\\n2026-01-01 00:00:00,000 ERROR pipeline.watcher: forged\\x1b[31m\\x07.log" in text


@pytest.fixture
def file_pipe(redis_server: RedisServer, r, es_url: str, tracker: TrackerServer,  # type: ignore[no-untyped-def]
              tmp_path: Path) -> Iterator[Pipeline]:
    """watcher -> broker -> parser -> file logger, started; stopped after the test."""
    pipe = Pipeline(tmp_path, redis_server.url, es_url, tracker, sinks=("file",)).start()
    yield pipe
    pipe.stop()


def test_13_rename_rotation_while_the_watcher_is_down(file_pipe: Pipeline, tmp_path: Path) -> None:
    scenario = Scenario("13 rename rotation while the watcher is down")
    pipe = file_pipe
    watcher = pipe.workers["logger_access"]
    pipe.write(500, pace=0.02, chunk=50)
    watcher.kill()
    pipe.write(300, chunk=50)  # unread tail of the file about to be rotated
    pipe.log.rename(tmp_path / "access.log.1")
    pipe.write(300, chunk=50)  # the new file
    watcher.start()
    pipe.write(300, pace=0.02, chunk=50)
    pipe.wait_delivered()
    pipe.check(scenario)


def test_14_copytruncate_and_plain_truncation(file_pipe: Pipeline, tmp_path: Path) -> None:
    import shutil

    scenario = Scenario("14 copytruncate rotation, then plain truncation")
    pipe = file_pipe
    for n, rotate in enumerate(("copytruncate", "truncate")):
        pipe.write(500, pace=0.02, chunk=50)
        wait_for(lambda: len(pipe.seen("file")) >= pipe.written, what="caught up before rotating")
        if rotate == "copytruncate":
            shutil.copy(pipe.log, tmp_path / f"access.log.{n}")
        os.truncate(pipe.log, 0)
    pipe.write(500, pace=0.02, chunk=50)
    pipe.wait_delivered()
    pipe.check(scenario)
    assert pipe.workers["logger_access"].logfile.read_text().count("was truncated") == 2


def test_15_rotated_file_deleted_while_down_and_inode_reuse(file_pipe: Pipeline, tmp_path: Path) -> None:
    scenario = Scenario("15 rotated file deleted while down (gap reported)")
    pipe = file_pipe
    watcher = pipe.workers["logger_access"]
    pipe.write(400, pace=0.02, chunk=50)
    wait_for(lambda: len(pipe.seen("file")) >= 400, what="caught up")
    watcher.kill()
    pipe.write(100, chunk=50)  # these lines go with the deleted file: they cannot be read
    old_inode = pipe.log.stat().st_ino
    (tmp_path / "access.log").rename(tmp_path / "access.log.1")
    (tmp_path / "access.log.1").unlink()
    pipe.write(400, chunk=50)  # a new file, quite possibly on the old inode
    watcher.start()
    pipe.write(100, pace=0.02, chunk=50)
    gap = set(range(400, 500))
    wait_for(lambda: len(pipe.seen("file")) >= pipe.written - len(gap), what="the rest")
    time.sleep(1.5)
    seen = pipe.seen("file")
    result = scenario.record("file", {**seen, **dict.fromkeys(gap, 1)}, pipe.written,
                             note=f"{len(gap)} unreadable lines reported as GAP; inode "
                                  f"{'reused' if pipe.log.stat().st_ino == old_inode else 'new'}")
    assert result == {"lost": 0, "duplicated": 0, "unexpected": 0}, result
    assert not gap & set(seen), "lines of the deleted file appeared: a wrong resume"
    assert "GAP" in watcher.logfile.read_text()


def test_16_huge_line_invalid_utf8_and_binary(file_pipe: Pipeline, tmp_path: Path) -> None:
    scenario = Scenario("16 50 MB line, invalid UTF-8, random binary")
    pipe = file_pipe
    pipe.write(300, pace=0.02, chunk=50)
    with pipe.log.open("ab") as handle:
        handle.write(b"A" * (50 * 1024 * 1024))  # no newline yet: held, then truncated
        handle.flush()
        time.sleep(2)
        handle.write(b"\n" + b"caf\xe9 \xff\xfe half-UTF-8 \xc3\n" + os.urandom(4096).replace(b"\n", b"") + b"\n")
    pipe.write(300, pace=0.02, chunk=50)
    pipe.wait_delivered()
    alive(pipe)
    reasons = [e["reason"] for e in pipe.dead_letters()]
    assert len(reasons) == 3, reasons  # the parser refuses the three, each with its reason
    pipe.client.delete(K.dead_letters)
    pipe.check(scenario, note="3 garbage lines dead-lettered by the parser")
