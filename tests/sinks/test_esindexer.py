"""The Elasticsearch indexer against a real Elasticsearch 8 node."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import orjson
import pytest
import redis
from elasticsearch import ApiError, Elasticsearch

from bench.genlog import lines
from pipeline.core.keys import Keys
from pipeline.sinks.esindexer import document_id, index_name
from tests.support.faults import Scenario, es_seen
from tests.support.procs import SEQ, Worker
from tests.support.servers import wait_for

K = Keys()
pytestmark = pytest.mark.slow


def es_client(url: str) -> Elasticsearch:
    return Elasticsearch(url, request_timeout=60)


def indexer_section(es_url: str, index: str, name: str = "worker_es", listento: str = "parsed") -> str:
    return f"""
        [{name}]
        type = esindexer
        listento = {listento}
        hosts = {es_url}
        index = {index}
        batch_docs = 300
        max_backoff = 2
    """


def count(es: Elasticsearch, index: str) -> int:
    """Documents in ``index``; 0 while it does not exist or its shard is still starting."""
    try:
        es.indices.refresh(index=index, ignore_unavailable=True)
        return int(es.count(index=index, ignore_unavailable=True)["count"])
    except ApiError as exc:
        if exc.meta.status == 503:  # just auto-created by the first bulk: no active shard yet
            return 0
        raise


def test_ids_and_index_names() -> None:
    from datetime import UTC, datetime, timedelta

    record = {"service": "s", "src": "abc", "off": 10, "logline": "x", "time": "2024-10-10T13:55:36+02:00"}
    assert document_id(record, ()) == document_id(dict(record, other=1), ())  # the line decides
    assert document_id({"a": 1, "b": 2}, ("a",)) == document_id({"a": 1, "b": 3}, ("a",))
    assert document_id({"a": 1, "b": 2}, ()) != document_id({"a": 1, "b": 3}, ())
    # a bare record's own src/off/service cannot put it on a line's id
    bare = {k: v for k, v in record.items() if k != "logline"}
    assert document_id(bare, ()) != document_id(record, ())
    assert index_name("access-%Y.%m.%d", record, "time", max_age_days=10_000) == "access-2024.10.10"
    recent = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    assert index_name("access-%Y.%m.%d", {"time": recent}, "time") == "access-" + recent[:10].replace("-", ".")
    assert index_name("logs", record, "time") == "logs"


def test_hostile_times_cannot_make_indices_without_end() -> None:
    for stamp in ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00", "2024-10-10T13:55:36+02:00"):
        assert index_name("kontext-%Y.%m.%d", {"time": stamp}, "time") == "kontext-out-of-range"
    assert index_name("logs-%Y-%m", {"time": "1970-01-01T00:00:00"}, "time") == "logs-out-of-range"


def test_100k_lines_exactly_once_through_two_sigkills(es_url: str, write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    es = es_client(es_url)
    index = "e2e-access"
    log = tmp_path / "access.log"
    cfg = write_cfg(f"""
        [logger_access]
        type = watcher
        logfile = {log}
        pushto = raw

        [worker_parse]
        type = parser
        listento = raw
        pushto = parsed
        plugin = accesslog
    """ + indexer_section(es_url, index))
    every = list(lines(100_000, seed=11, seq=True))
    log.write_text("")
    workers = [Worker(cfg, name, tmp_path).start() for name in ("logger_access", "worker_parse", "worker_es")]
    try:
        with log.open("a") as handle:
            for start in range(0, len(every), 10_000):
                handle.write("\n".join(every[start:start + 10_000]) + "\n")
                handle.flush()
                if start in (30_000, 60_000):
                    wait_for(lambda s=start: count(es, index) > s - 20_000, timeout=120, interval=1,
                             what="indexing under way")
                    workers[2].restart()  # SIGKILL mid-bulk
        wait_for(lambda: count(es, index) >= 100_000 and r.llen(K.queue("parsed")) == 0, timeout=600,
                 interval=2, what="100,000 documents")
        time.sleep(2)
        assert count(es, index) == 100_000
        seqs = set()
        for hit in _scan(es, index):
            match = SEQ.search(hit["_source"]["url"])
            assert match is not None
            seqs.add(int(match.group(1)))
        assert seqs == set(range(100_000))
        assert r.llen(K.dead_letters) == 0
    finally:
        for worker in workers:
            worker.stop()


def _scan(es: Elasticsearch, index: str):  # type: ignore[no-untyped-def]
    from elasticsearch.helpers import scan

    yield from scan(es, index=index, query={"query": {"match_all": {}}}, _source=["url"], size=5000)


def test_mapping_conflict_dead_letters_only_the_bad_documents(es_url: str, write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    es = es_client(es_url)
    index = "conflict-check"
    es.options(ignore_status=404).indices.delete(index=index)
    es.indices.create(index=index, mappings={"properties": {"n": {"type": "integer"}}})
    cfg = write_cfg(indexer_section(es_url, index, listento="records"))
    worker = Worker(cfg, "worker_es", tmp_path).start()
    try:
        records = [{"service": "t", "src": "x", "off": i, "n": "not a number" if i % 10 == 3 else i} for i in range(100)]
        r.rpush(K.queue("records"), orjson.dumps(records))
        r.rpush(K.queue("records"), orjson.dumps(records[:50]))  # a redelivery: 409s, nothing new
        wait_for(lambda: r.llen(K.queue("records")) == 0 and r.llen(K.dead_letters) >= 10, timeout=60,
                 what="indexing")
        time.sleep(1)
        assert count(es, index) == 90
        assert r.llen(K.dead_letters) == 10 + 5  # the redelivered batch repeats 5 bad ones
        entry = orjson.loads(r.lindex(K.dead_letters, 0))
        assert "document_parsing_exception" in entry["reason"] or "mapper_parsing_exception" in entry["reason"]
        assert entry["item"]["n"] == "not a number"
        seen = es_seen(es, index, "off")
        refused = {orjson.loads(e)["item"]["off"] for e in r.lrange(K.dead_letters, 0, -1)}
        Scenario("10 Elasticsearch rejecting some documents (400)").check(
            "es", {**seen, **dict.fromkeys(refused, 1)}, 100, note=f"{len(refused)} dead-lettered with reason")
    finally:
        worker.stop()


def rss_kib(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])
    return 0


def records(n: int, start: int = 0, size: int = 200) -> list[dict]:
    return [{"service": "t", "src": "load", "off": i, "seq": i, "text": "x" * size} for i in range(start, start + n)]


def test_real_429s_are_retried_until_every_document_is_in(es_node_factory, write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    node = es_node_factory(queue_size=1)  # one write thread, a write queue of one: bulk requests bounce
    es = es_client(node.url)
    index = "throttled"
    cfg = write_cfg(indexer_section(node.url, index, listento="records").replace("batch_docs = 300", "batch_docs = 50"))
    for start in range(0, 20_000, 500):
        r.rpush(K.queue("records"), orjson.dumps(records(500, start)))
    workers = [Worker(cfg, "worker_es", tmp_path, f"worker_es_{n:02d}").start() for n in range(4)]
    try:
        wait_for(lambda: r.llen(K.queue("records")) == 0 and count(es, index) >= 20_000, timeout=600,
                 interval=2, what="20,000 documents through 429s")
        time.sleep(2)
        assert count(es, index) == 20_000 and r.llen(K.dead_letters) == 0
        logs = "".join(w.logfile.read_text() for w in workers)
        assert "with 429" in logs or "answered 429" in logs
        Scenario("9 Elasticsearch answering 429 (write queue of 1)").check(
            "es", es_seen(es, index, "seq"), 20_000, note=f"{logs.count('429')} log lines of 429s")
    finally:
        for worker in workers:
            worker.stop()


def test_elasticsearch_down_for_30s_under_load(es_node_factory, write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    scenario = Scenario("8 Elasticsearch unreachable for 30 s under load")
    node = es_node_factory()
    es = es_client(node.url)
    index = "outage"
    cfg = write_cfg(indexer_section(node.url, index, listento="records"))
    worker = Worker(cfg, "worker_es", tmp_path).start()
    try:
        r.rpush(K.queue("records"), orjson.dumps(records(500)))
        wait_for(lambda: count(es, index) == 500, timeout=60, what="first batch")
        node.stop()
        samples = []
        for second in range(30):  # the backlog grows in Redis while Elasticsearch is away
            r.rpush(K.queue("records"), orjson.dumps(records(500, 500 + second * 500, size=2000)))
            assert worker.proc is not None
            samples.append(rss_kib(worker.proc.pid))
            time.sleep(1)
        assert r.llen(K.queue("records")) >= 28  # it stopped taking batches
        # memory flat while down (each failed bulk of ~1 MB used to stay alive until a collection)
        assert max(samples[5:]) - min(samples[5:]) < 2 * 1024, samples
        node.start()
        wait_for(lambda: r.llen(K.queue("records")) == 0 and count(es, index) >= 15_500, timeout=300,
                 interval=2, what="the backlog to drain")
        time.sleep(2)
        assert count(es, index) == 15_500 and r.llen(K.dead_letters) == 0
        assert "unreachable" in worker.logfile.read_text()
        scenario.check("es", es_seen(es, index, "seq"), 15_500, note="RSS flat while down")
    finally:
        worker.stop()


def test_application_records_path_with_stable_ids(es_url: str, write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    es = es_client(es_url)
    index = "kontext-records"
    cfg = write_cfg("""
        [worker_kontext]
        type = parser
        listento = kontext
        pushto = kontext_parsed
        plugin = kontext
        opt_timezone = Europe/Prague
    """ + indexer_section(es_url, index, listento="kontext_parsed").replace(
        "max_backoff = 2", "max_backoff = 2\n        id_fields = id"))
    record = {"user_id": 7, "proc_time": 0.12, "action": "first", "params": {"corpname": "syn2020"},
              "date": "2024-03-01 10:00:00.123456",
              "request": {"HTTP_X_FORWARDED_FOR": "2001:db8::9, 10.0.0.1", "HTTP_USER_AGENT": "Mozilla/5.0 (X11) Firefox/121.0"}}
    bot = dict(record, request={"REMOTE_ADDR": "192.0.2.1", "HTTP_USER_AGENT": "Googlebot/2.1"})
    for payload in (record, record, bot):  # the application pushes single JSON records; one twice
        r.rpush(K.queue("kontext"), orjson.dumps(payload))
    others = [dict(record, user_id=1000 + n) for n in range(300)]
    for payload in others:  # many single records: gathered into bulks by the indexer
        r.rpush(K.queue("kontext"), orjson.dumps(payload))
    workers = [Worker(cfg, name, tmp_path).start() for name in ("worker_kontext", "worker_es")]
    try:
        wait_for(lambda: r.llen(K.queue("kontext")) == 0 and r.llen(K.queue("kontext_parsed")) == 0
                 and count(es, index) >= 301, timeout=60, what="the records indexed")
        time.sleep(1)
        assert count(es, index) == 301  # the repeat has the same id; the bot was dropped
        doc = es.search(index=index, query={"term": {"user_id": 7}})["hits"]["hits"][0]["_source"]
        assert doc["ip"] == "2001:db8::9" and doc["time"] == "2024-03-01T10:00:00.123456+01:00"
        assert doc["@timestamp"] == doc["time"]
    finally:
        for worker in workers:
            worker.stop()


def test_ingest_pipeline_is_requested_for_every_document(es_url: str, write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    es = es_client(es_url)
    es.ingest.put_pipeline(id="loglines-noop", processors=[])
    cfg = write_cfg(textwrap.dedent(indexer_section(es_url, "piped", listento="records"))
                    + "pipeline = loglines-noop\n"
                    + textwrap.dedent(indexer_section(es_url, "unpiped", "worker_missing", "records2"))
                    + "pipeline = no-such-pipeline\n")
    workers = [Worker(cfg, name, tmp_path).start() for name in ("worker_es", "worker_missing")]
    try:
        r.rpush(K.queue("records"), orjson.dumps(records(20)))
        r.rpush(K.queue("records2"), orjson.dumps(records(3)))
        wait_for(lambda: count(es, "piped") == 20 and r.llen(K.dead_letters) == 3, timeout=60, what="indexing")
        entry = orjson.loads(r.lindex(K.dead_letters, 0))
        assert "no-such-pipeline" in entry["reason"]  # the pipeline was asked for, per document
    finally:
        for worker in workers:
            worker.stop()
