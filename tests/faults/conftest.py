"""Fixtures of the fault-injection scenarios."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import RedisServer
from tests.support.tracker_server import TrackerServer


@pytest.fixture
def tracker() -> Iterator[TrackerServer]:
    with TrackerServer() as server:
        yield server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop, kill, pause and starve."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()
