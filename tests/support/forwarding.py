"""Two (or three) loglines nodes on 127.0.0.1 for the forwarder's scenarios.

The site: its own Redis, a watcher on a log of sequence-numbered lines, a forwarder. Each
receiver: its own Redis, an HTTP ingest worker and a file logger writing the lines it got.
Between the forwarder and each receiver's ingest sits a fault proxy the test controls.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import orjson

from pipeline.core.keys import Keys
from tests.support.procs import Worker, count_seq
from tests.support.proxy import FaultProxy
from tests.support.servers import RedisServer, free_port, wait_for

TOKEN = "forward-token-0123456789abcdef"


class Receiver:
    def __init__(self, tmp: Path, name: str) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        self.redis = RedisServer(self.dir / "redis").start()
        self.port = free_port()
        (self.dir / "tokens").write_text(f"site:{TOKEN}\n")
        self.out = self.dir / "received.log"
        self.cfg = self.dir / "loglines.cfg"
        self.cfg.write_text(textwrap.dedent(f"""
            [redis]
            url = {self.redis.url}
            heartbeat_ttl = 3
            socket_timeout = 2
            block_timeout = 0.5
            [worker_ingest]
            type = http
            pushto = received
            tokens_file = tokens
            listen = 127.0.0.1:{self.port}
            [logger_out]
            type = filelogger
            listento = received
            logfile = {self.out}
        """))
        logs = self.dir / "logs"
        logs.mkdir()
        self.ingest = Worker(self.cfg, "worker_ingest", logs)
        self.logger = Worker(self.cfg, "logger_out", logs)
        self.proxy = FaultProxy(self.port)
        self.url = f"http://127.0.0.1:{self.proxy.port}/v1/events"

    def start(self) -> Receiver:
        self.ingest.start()
        self.logger.start()
        return self

    def seen(self) -> dict[int, int]:
        return count_seq(self.out)[0]

    def stop(self) -> None:
        self.proxy.close()
        self.ingest.stop()
        self.logger.stop()
        self.redis.kill()


class Site:
    def __init__(self, tmp: Path, receivers: list[Receiver], extra: str = "") -> None:
        self.dir = tmp / "site"
        self.dir.mkdir()
        self.redis = RedisServer(self.dir / "redis").start()
        self.log = self.dir / "access.log"
        self.log.write_text("")
        (self.dir / "tokens").write_text(f"{TOKEN}\n")
        targets = ", ".join(f"{r.dir.name}={r.url}" for r in receivers)
        self.cfg = self.dir / "loglines.cfg"
        self.cfg.write_text(textwrap.dedent(f"""
            [redis]
            url = {self.redis.url}
            heartbeat_ttl = 3
            socket_timeout = 2
            block_timeout = 0.5
            [logger_access]
            type = watcher
            logfile = {self.log}
            pushto = raw
            batch_lines = 50
            batch_ms = 100
            [worker_fwd]
            type = forward
            listento = raw
            targets = {targets}
            tokens_file = tokens
            timeout = 2
            max_failover_duration = 2
        """) + textwrap.dedent(extra))
        logs = self.dir / "logs"
        logs.mkdir()
        self.watcher = Worker(self.cfg, "logger_access", logs)
        self.forwarder = Worker(self.cfg, "worker_fwd", logs)
        self.written = 0
        self.keys = Keys()

    def start(self) -> Site:
        self.watcher.start()
        self.forwarder.start()
        return self

    def write(self, count: int, pace: float = 0.0, chunk: int = 50) -> None:
        with self.log.open("a") as handle:
            for start in range(self.written, self.written + count, chunk):
                end = min(start + chunk, self.written + count)
                handle.write("".join(f"seq={n} line of the site\n" for n in range(start, end)))
                handle.flush()
                if pace:
                    time.sleep(pace)
        self.written += count

    def targets(self) -> dict[str, dict]:
        client = self.redis.client()
        return {k.decode(): orjson.loads(v) for k, v in client.hgetall(self.keys.forward("worker_fwd")).items()}

    def stop(self) -> None:
        self.watcher.stop()
        self.forwarder.stop()
        self.redis.kill()


def wait_received(receiver: Receiver, count: int, timeout: float = 180) -> None:
    wait_for(lambda: len(receiver.seen()) >= count, timeout=timeout, interval=0.5,
             what=f"{count} lines at {receiver.dir.name} ({len(receiver.seen())} so far)")
    time.sleep(1.5)
