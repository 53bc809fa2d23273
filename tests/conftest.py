from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.servers import RedisServer


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


#: Why the test node could not start, once it failed: later tests fail at once with that reason
#: instead of building and waiting again.
ES_BROKEN: list[str] = []


class EsNode:
    """One real Elasticsearch node started by tests/es/start-es.sh; stop() and start() again
    keep its data (the same home)."""

    def __init__(self, build: Path, queue_size: int = 0, env: dict[str, str] | None = None,
                 ports: tuple[int, int] | None = None) -> None:
        import tempfile

        from tests.support.servers import free_port

        # not under pytest's private (0700) temp dir: the node runs as an unprivileged user
        self.work = Path(tempfile.mkdtemp(prefix="loglines-es-"))
        self.work.chmod(0o755)
        self.build, self.queue_size, self.env = build, queue_size, dict(env or {})
        self.ports = ports or (free_port(), free_port())
        self.url = f"http://127.0.0.1:{self.ports[0]}"

    def start(self) -> EsNode:
        import os
        import subprocess

        script = Path(__file__).parent / "es" / "start-es.sh"
        env = dict(os.environ, LOGLINES_ES_BUILD=str(self.build), **self.env)
        if ES_BROKEN:
            pytest.fail(f"Elasticsearch could not start earlier in this run: {ES_BROKEN[0]}", pytrace=False)
        started = subprocess.run(
            [str(script), str(self.work), str(self.ports[0]), str(self.ports[1]), str(self.queue_size)],
            capture_output=True, text=True, timeout=1500, env=env)
        if started.returncode != 0:
            reasons = [line for line in started.stderr.splitlines() if line.startswith("loglines-es: ")]
            reason = reasons[-1][len("loglines-es: "):] if reasons else "see the output below"
            ES_BROKEN.append(reason)
            pytest.fail(f"Elasticsearch did not start: {reason}\n\n{started.stderr[-3000:]}", pytrace=False)
        return self

    @property
    def pid(self) -> int:
        return int((self.work / "es.pid").read_text())

    def stop(self) -> None:
        import os
        import signal
        import time

        pid = self.pid
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(600):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture(scope="session")
def es_build() -> Iterator[Path]:
    """Where the test node's runner is built once for the session."""
    import os
    import shutil
    import tempfile

    if not (shutil.which("mvn") and shutil.which("java")):
        if os.environ.get("CI") == "true":
            pytest.fail("Elasticsearch tests need Java and Maven (or LOGLINES_TEST_ES_URL)")
        pytest.skip("no Java/Maven to start Elasticsearch and no LOGLINES_TEST_ES_URL")
    build = Path(tempfile.mkdtemp(prefix="loglines-es-build-"))
    build.chmod(0o755)
    yield build
    shutil.rmtree(build, ignore_errors=True)


@pytest.fixture(scope="session")
def es_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A real Elasticsearch 8: $LOGLINES_TEST_ES_URL, or a node started for the session."""
    import os

    explicit = os.environ.get("LOGLINES_TEST_ES_URL")
    if explicit:
        yield explicit.rstrip("/")
        return
    node = EsNode(request.getfixturevalue("es_build")).start()
    try:
        yield node.url
    finally:
        node.remove()


@pytest.fixture
def es_node_factory(es_build: Path) -> Iterator[object]:
    """Start extra nodes of our own (to stop them, or with a tiny write queue)."""
    nodes: list[EsNode] = []

    def make(queue_size: int = 0) -> EsNode:
        node = EsNode(es_build, queue_size).start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.remove()


@pytest.fixture
def es_cluster(es_build: Path) -> Iterator[list[EsNode]]:
    """Three real Elasticsearch nodes forming one cluster on 127.0.0.1 (512 MiB heap each)."""
    from tests.support.servers import free_port, wait_for

    ports = [(free_port(), free_port()) for _ in range(3)]
    names = [f"node-{n}" for n in range(3)]
    cluster = f"loglines-cluster-{ports[0][0]}"
    common = {"LOGLINES_ES_SEEDS": ",".join(f"127.0.0.1:{t}" for _, t in ports),
              "LOGLINES_ES_MASTERS": ",".join(names), "LOGLINES_ES_CLUSTER": cluster,
              "LOGLINES_ES_HEAP": "512m"}
    nodes = [EsNode(es_build, env={**common, "LOGLINES_ES_NODE": name}, ports=port)
             for name, port in zip(names, ports, strict=True)]
    try:
        for node in nodes:
            node.start()
        import requests

        def formed() -> bool:
            try:
                health = requests.get(nodes[0].url + "/_cluster/health", timeout=5).json()
            except (requests.RequestException, ValueError):
                return False
            return health.get("number_of_nodes") == 3 and health.get("status") in ("green", "yellow")

        wait_for(formed, timeout=180, interval=1, what="three nodes in one cluster")
        yield nodes
    finally:
        for node in nodes:
            node.remove()


@pytest.fixture(autouse=True)
def _scenario_clock() -> None:
    from tests.support.faults import TEST_STARTED

    TEST_STARTED[0] = time.monotonic()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """The fault-injection summary: per scenario and sink, what was lost, doubled, unexpected."""
    from tests.support.faults import ROWS, summary

    if ROWS:
        terminalreporter.section("fault injection: lost / duplicated / unexpected per sink")
        for row in summary():
            terminalreporter.write_line(row)
