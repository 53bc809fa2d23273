"""End to end with real processes: nothing lost, nothing doubled, through kills and rotations."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from bench.genlog import lines
from tests.support.procs import Worker, count_seq, oracle
from tests.support.servers import wait_for

pytestmark = pytest.mark.slow

TOTAL = 100_000


def pipeline_cfg(write_cfg, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    return write_cfg(f"""
        [logger_access]
        type = watcher
        logfile = {tmp_path}/access.log
        pushto = raw
        close_after_s = 1

        [worker_parse]
        type = parser
        listento = raw
        pushto = parsed
        plugin = accesslog

        [logger_out]
        type = filelogger
        listento = parsed
        logfile = {tmp_path}/out.log
        format = raw
    """)


def test_100k_lines_survive_sigkills_and_two_rotations(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    cfg = pipeline_cfg(write_cfg, tmp_path)
    logdir = tmp_path / "logs"
    logdir.mkdir()
    watcher = Worker(cfg, "logger_access", logdir).start()
    parser = Worker(cfg, "worker_parse", logdir).start()
    out = Worker(cfg, "logger_out", logdir).start()
    log = tmp_path / "access.log"
    out_log = tmp_path / "out.log"

    def caught_up(n: int) -> None:
        wait_for(lambda: len(count_seq(out_log)[0]) >= n, timeout=60, interval=0.1,
                 what=f"{n} lines through the pipeline")

    def rotate(suffix: str) -> None:
        log.rename(tmp_path / f"access.log.{suffix}")

    events = {
        20_000: lambda: watcher.restart(),  # SIGKILL mid-stream, behind the writer
        33_000: lambda: (caught_up(30_000), rotate("1")),  # rename rotation while running
        45_000: lambda: parser.restart(),
        60_000: lambda: (caught_up(59_000), watcher.kill()),
        62_000: lambda: rotate("2"),  # rotated while the watcher is down
        64_000: lambda: watcher.start(),
        80_000: lambda: parser.restart(),
        90_000: lambda: watcher.restart(),
    }
    try:
        handle = log.open("a")
        for n, line in enumerate(lines(TOTAL, seed=3, seq=True)):
            if n in events:
                handle.close()
                events[n]()
                handle = log.open("a")
            handle.write(line + "\n")
            if n % 1000 == 999:
                handle.flush()
                time.sleep(0.02)
        handle.close()

        def done() -> bool:
            return len(count_seq(out_log)[0]) >= TOTAL

        try:
            wait_for(done, timeout=180, interval=0.5, what="all lines in the output")
        except AssertionError:
            seen, _ = count_seq(out_log)
            raise AssertionError(f"after 180 s: {oracle(seen, TOTAL)}; dlq "
                                 f"{r.llen('{loglines}:dlq')}; logs in {logdir}") from None
        time.sleep(1.5)  # anything doubled would show up now
        seen, other = count_seq(out_log)
        result = oracle(seen, TOTAL)
        assert result == {"lost": 0, "duplicated": 0, "unexpected": 0}, result
        assert other == 0
        assert r.llen("{loglines}:dlq") == 0
    finally:
        for worker in (watcher, parser, out):
            worker.stop()
