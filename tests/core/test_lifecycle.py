"""Flags, waits and the watchdog that says when a worker's loop is stuck."""

from __future__ import annotations

import time

import pytest

from pipeline.core.lifecycle import Flags, Watchdog, sleep_unless, turned


def stuck_somewhere_without_turning(seconds: float) -> None:
    time.sleep(seconds)  # an open() of a FIFO, say: nothing turns the loop


def test_the_watchdog_names_a_loop_that_stopped_turning(caplog: pytest.LogCaptureFixture) -> None:
    reports: list[float] = []
    dog = Watchdog("w", 0.3, report=reports.append, every=0.1)
    dog.start()
    try:
        stuck_somewhere_without_turning(1.0)
        assert "w: the loop has not turned for" in caplog.text
        assert "stuck_somewhere_without_turning" in caplog.text
        stale = reports[-1]
        assert time.time() - stale >= 0.8  # the heartbeat shows when the loop last turned
        turned()
        time.sleep(0.3)
        assert "w: the loop turns again" in caplog.text and time.time() - reports[-1] < 0.5
        caplog.clear()
        sleep_unless(Flags(), 0.6)  # waiting as it should is turning
        assert "has not turned" not in caplog.text
    finally:
        dog.done.set()
