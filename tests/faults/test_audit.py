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
