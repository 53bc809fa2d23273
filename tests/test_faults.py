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
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import Pipeline, Scenario
from tests.servers import RedisServer, wait_for
from tests.tracker_server import TrackerServer

pytestmark = pytest.mark.slow


@pytest.fixture
def tracker() -> Iterator[TrackerServer]:
    with TrackerServer() as server:
        yield server


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


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop, kill, pause and starve."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def alive(pipe: Pipeline) -> None:
    for name, worker in pipe.workers.items():
        assert worker.proc is not None and worker.proc.poll() is None, f"{name} exited"


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
    from pipeline.keys import Keys

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
