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


@pytest.fixture(scope="session")
def es_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Elasticsearch 8: $LOGLINES_TEST_ES_URL, or a node started by tests/es/start-es.sh."""
    import os
    import shutil
    import signal
    import subprocess
    import time

    explicit = os.environ.get("LOGLINES_TEST_ES_URL")
    if explicit:
        yield explicit.rstrip("/")
        return
    if not (shutil.which("mvn") and shutil.which("java")):
        if os.environ.get("CI") == "true":
            pytest.fail("Elasticsearch tests need Java and Maven (or LOGLINES_TEST_ES_URL)")
        pytest.skip("no Java/Maven to start Elasticsearch and no LOGLINES_TEST_ES_URL")
    import tempfile

    from tests.servers import free_port

    # not under pytest's private (0700) temp dir: the node runs as an unprivileged user
    work = Path(tempfile.mkdtemp(prefix="loglines-es-"))
    work.chmod(0o755)
    script = Path(__file__).parent / "es" / "start-es.sh"
    started = subprocess.run([str(script), str(work), str(free_port()), str(free_port())],
                             capture_output=True, text=True, timeout=1500)
    if started.returncode != 0:
        pytest.fail(f"Elasticsearch did not start:\n{started.stderr[-3000:]}")
    pid = int((work / "es.pid").read_text())
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        shutil.rmtree(work, ignore_errors=True)
