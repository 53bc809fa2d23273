from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.flushall()


@pytest.fixture
def write_cfg(tmp_path: Path, redis_server: RedisServer):  # type: ignore[no-untyped-def]
    """Write a loglines.cfg in tmp_path pointing at the test Redis; returns its path."""

    def write(body: str, redis_section: str | None = None) -> Path:
        head = redis_section if redis_section is not None else (
            f"[redis]\nurl = {redis_server.url}\nheartbeat_ttl = 3\n"
        )
        text = "[supervisor]\npassword = test-password\n\n" + head + "\n" + textwrap.dedent(body)
        path = tmp_path / "loglines.cfg"
        path.write_text(text)
        return path

    return write
