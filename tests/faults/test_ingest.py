"""Fault scenarios of HTTP ingest: clients that retry every answer but 2xx with the same
Idempotency-Key, and what is acknowledged to them is in Elasticsearch exactly once."""

from __future__ import annotations

import signal
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from elasticsearch import Elasticsearch

from tests.support.faults import Scenario, es_seen
from tests.support.procs import Worker
from tests.support.servers import RedisServer, free_port, wait_for

pytestmark = pytest.mark.slow
TOKEN = "load-token-0123456789abcdef"


class IngestPipeline:
    """http ingest -> queue -> esindexer, and clients that retry until they get a 2xx."""

    def __init__(self, tmp: Path, redis_url: str, es_url: str) -> None:
        self.port = free_port()
        self.index = f"ingest-{uuid.uuid4().hex[:8]}"
        (tmp / "tokens").write_text(f"load:{TOKEN}\n")
        self.cfg = tmp / "loglines.cfg"
        self.cfg.write_text(textwrap.dedent(f"""
            [redis]
            url = {redis_url}
            heartbeat_ttl = 3
            socket_timeout = 2
            block_timeout = 0.5
            [worker_ingest]
            type = http
            pushto = events
            tokens_file = tokens
            listen = 127.0.0.1:{self.port}
            [worker_es]
            type = esindexer
            listento = events
            hosts = {es_url}
            index = {self.index}
            time_field = @timestamp
            max_backoff = 2
        """))
        logs = tmp / "logs"
        logs.mkdir(exist_ok=True)
        self.ingest = Worker(self.cfg, "worker_ingest", logs)
        self.indexer = Worker(self.cfg, "worker_es", logs)
        self.es = Elasticsearch(es_url, request_timeout=60)
        self.acked: set[int] = set()
        self.total = 0
        self.sent = 0
        self.refused = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.url = f"http://127.0.0.1:{self.port}/v1/events"

    def start(self) -> IngestPipeline:
        self.ingest.start()
        self.indexer.start()
        wait_for(self._up, timeout=30, what="ingest listening")
        return self

    def _up(self) -> bool:
        try:
            return requests.get(self.url.replace("/v1/events", "/healthz"),
                                headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def client(self, first: int, batches: int, size: int = 20) -> None:
        """Send ``batches`` batches of ``size`` events, each retried with its key until a 2xx."""
        session = requests.Session()
        for b in range(batches):
            seqs = range(first + b * size, first + (b + 1) * size)
            body = "\n".join(f'{{"seq": {n}, "action": "click"}}' for n in seqs)
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson",
                       "Idempotency-Key": f"batch-{first}-{b}"}
            while True:
                try:
                    reply = session.post(self.url, data=body, headers=headers, timeout=5)
                    if 200 <= reply.status_code < 300:
                        break
                except requests.RequestException:
                    session = requests.Session()
                with self.lock:
                    self.refused += 1
                time.sleep(0.05)
            with self.lock:
                self.acked.update(seqs)
                self.sent += size
            time.sleep(0.02)  # a steady load, so that the fault comes in the middle of it

    def load(self, clients: int = 4, batches: int = 300, size: int = 20) -> list[threading.Thread]:
        self.total = clients * batches * size
        threads = [threading.Thread(target=self.client, args=(c * batches * size, batches, size),
                                    daemon=True) for c in range(clients)]
        for thread in threads:
            thread.start()
        return threads

    def check(self, scenario: Scenario, threads: list[threading.Thread], note: str = "") -> None:
        for thread in threads:
            thread.join(300)
        assert not any(t.is_alive() for t in threads), "a client never got its batch taken"
        assert self.refused > 0, "the fault came after the load"
        assert self.acked == set(range(self.total))  # every batch acknowledged in the end
        wait_for(lambda: len(es_seen(self.es, self.index, "seq")) >= self.total, timeout=120,
                 interval=0.5, what=f"{self.total} documents")
        time.sleep(1.5)
        scenario.check("es", es_seen(self.es, self.index, "seq"), self.total,
                       note=note or f"{self.refused} answers retried by the clients")

    def close(self) -> None:
        self.stop.set()
        self.ingest.stop()
        self.indexer.stop()
        self.es.options(ignore_status=404).indices.delete(index=self.index)
        self.es.close()


def test_29_ingest_killed_under_load_clients_retrying_with_their_keys(tmp_path: Path, es_url: str) -> None:
    scenario = Scenario("29 ingest SIGKILLed under load, clients retry")
    server = RedisServer(tmp_path / "redis").start()
    pipe = IngestPipeline(tmp_path, server.url, es_url).start()
    try:
        threads = pipe.load()
        for _ in range(2):
            time.sleep(1.5)
            pipe.ingest.kill(signal.SIGKILL)
            time.sleep(0.5)
            pipe.ingest.start()  # as supervisord does
        pipe.check(scenario, threads)
    finally:
        pipe.close()
        server.kill()


def test_30_ingest_redis_restarted_under_load(tmp_path: Path, es_url: str) -> None:
    scenario = Scenario("30 ingest: Redis SIGKILLed under load")
    server = RedisServer(tmp_path / "redis").start()
    pipe = IngestPipeline(tmp_path, server.url, es_url).start()
    try:
        threads = pipe.load()
        time.sleep(1.5)
        server.kill()
        time.sleep(2)
        server.start()
        pipe.check(scenario, threads)
    finally:
        pipe.close()
        server.kill()


def test_31_ingest_redis_paused_under_load(tmp_path: Path, es_url: str) -> None:
    scenario = Scenario("31 ingest: Redis paused 5 s under load")
    server = RedisServer(tmp_path / "redis").start()
    pipe = IngestPipeline(tmp_path, server.url, es_url).start()
    try:
        threads = pipe.load()
        time.sleep(1.5)
        server.client().client_pause(5000)
        pipe.check(scenario, threads)
    finally:
        pipe.close()
        server.kill()


def test_the_crowdsourcing_loggers_requests_land_in_a_daily_index(tmp_path: Path, es_url: str) -> None:
    """Its clients POST one JSON object to /logger/insert and get "True"; the event is stored
    with the server's time in the day's index, its document id the event_id ingest gave it."""
    from datetime import UTC, datetime

    server = RedisServer(tmp_path / "redis").start()
    pipe = IngestPipeline(tmp_path, server.url, es_url)
    pipe.cfg.write_text(pipe.cfg.read_text().replace(f"index = {pipe.index}", f"index = {pipe.index}-%Y.%m.%d"))
    pipe.start()
    try:
        event = {"worker_id": "w-17", "task": "label-42", "event": "submit", "answer": {"cat": True}}
        reply = requests.post(pipe.url.replace("/v1/events", "/logger/insert"), json=event,
                              headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert reply.status_code == 200 and reply.text == "True"
        today = f"{pipe.index}-{datetime.now(UTC):%Y.%m.%d}"
        wait_for(lambda: _count(pipe.es, today) == 1,
                 timeout=60, what="the event in the day's index")
        pipe.es.cluster.health(index=today, wait_for_status="yellow", timeout="30s")
        pipe.es.indices.refresh(index=today)
        from elasticsearch.helpers import scan

        hit = next(scan(pipe.es, index=today, query={"query": {"match_all": {}}}))
        assert hit["_id"] == hit["_source"]["event_id"] and hit["_source"]["task"] == "label-42"
        assert hit["_source"]["@timestamp"].startswith(f"{datetime.now(UTC):%Y-%m-%d}")
        assert hit["_source"]["token_name"] == "load"
    finally:
        pipe.index = f"{pipe.index}-{datetime.now(UTC):%Y.%m.%d}"  # what close() deletes
        pipe.close()
        server.kill()


def _count(es: Elasticsearch, index: str) -> int:
    """Documents in ``index``; 0 while it does not exist or its shard is still starting."""
    from elasticsearch import ApiError

    try:
        return int(es.count(index=index)["count"])
    except ApiError as exc:
        if exc.meta.status in (404, 503):
            return 0
        raise
