"""The Elasticsearch indexer against a real Elasticsearch 8 node."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import socket
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
from elasticsearch import ApiError, Elasticsearch

from bench.genlog import lines
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.sinks.esids import IdSchemes, ordered_line_id
from pipeline.sinks.esindexer import document_id
from pipeline.sinks.indexnames import index_name
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
    from datetime import UTC, datetime, timedelta, timezone

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
    # a name is kept per day only for patterns that name the day at most; every other, per time
    day = (datetime.now(UTC) - timedelta(days=1)).replace(hour=5, minute=7, second=9, microsecond=0)
    for stamp, zone in ((day.isoformat(), UTC), (day.astimezone(timezone(timedelta(hours=-9, minutes=-30))).isoformat(), None)):
        when = datetime.fromisoformat(stamp)
        for pattern in ("a-%Y.%m.%d", "a-%Y.%j-%a", "a-%Y.%m.%d-%H", "a-%G.%V.%H%M", "a-%Y%%%d"):
            assert index_name(pattern, {"time": stamp}, "time") == when.strftime(pattern), (pattern, stamp, zone)
        later = (when + timedelta(hours=1)).isoformat()
        assert index_name("a-%Y.%m.%d-%H", {"time": later}, "time") == (when + timedelta(hours=1)).strftime("a-%Y.%m.%d-%H")


ORDERED_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
SHA1_ID = re.compile(r"^[0-9a-f]{40}$")


def id_bytes(doc_id: str) -> bytes:
    """What Elasticsearch keeps of a base64url id, and so the order Lucene files it in."""
    return base64.urlsafe_b64decode(doc_id + "=" * (-len(doc_id) % 4))


def test_ordered_line_ids_are_file_then_offset_and_other_ids_keep_their_scheme() -> None:
    line = {"service": "s", "src": "abc", "logline": "x"}
    # pinned: a redelivery after an upgrade must get the id its first delivery got
    assert document_id(dict(line, off=10), ()) == hashlib.sha1(b"s\x00abc:10").hexdigest()
    assert document_id(dict(line, off=10), (), ordered=True) == ordered_line_id("s", "abc", 10) == "ozo-qYNxXBIAAAAAAAAACg"
    offsets = [n * 97 for n in range(300)]
    ids = [document_id(dict(line, off=off), (), ordered=True) for off in offsets]
    assert all(ORDERED_ID.match(i) for i in ids) and len(set(ids)) == len(ids)
    assert {id_bytes(i)[:8] for i in ids} == {id_bytes(ids[0])[:8]}  # one file, one head
    assert [int.from_bytes(id_bytes(i)[8:], "big") for i in ids] == offsets
    assert sorted(ids, key=id_bytes) == ids  # in bytes, as stored; not as strings ('z' < '0' in base64)
    assert id_bytes(document_id(dict(line, src="abd", off=10), (), ordered=True))[:8] != id_bytes(ids[0])[:8]
    assert id_bytes(document_id(dict(line, service="t", off=10), (), ordered=True))[:8] != id_bytes(ids[0])[:8]
    for off in (-1, 2**64, "10", 1.5, True):  # not an offset a watcher writes: the sha1 id
        assert document_id(dict(line, off=off), (), ordered=True) == document_id(dict(line, off=off), ())
    assert int.from_bytes(id_bytes(document_id(dict(line, off=2**64 - 1), (), ordered=True))[8:], "big") == 2**64 - 1
    # a record from outside may hold anything as its file: an id all the same, and not a cached one
    odd = [document_id(dict(line, src=src, off=10), (), ordered=True) for src in (["abc"], {"f": 1}, ["abc"], 7)]
    assert odd[0] == odd[2] and len(set(odd)) == 3 and all(ORDERED_ID.match(i) for i in odd)
    for record, fields in (({"a": 1, "b": 2}, ("a",)), ({"event_id": "e-1", "x": 1}, ()), ({"src": "abc", "off": 10}, ())):
        assert document_id(record, fields, ordered=True) == document_id(record, fields)


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
        records = [{"service": "t", "src": "x", "off": i, "n": "not a number" if i % 10 == 3 else i,
                    "time": "2026-06-15T13:55:36+02:00"} for i in range(100)]
        r.rpush(K.queue("records"), orjson.dumps(records))
        r.rpush(K.queue("records"), b"[{not json")  # kept for its dead letter while the bulk is out
        r.rpush(K.queue("records"), orjson.dumps(records[:50]))  # a redelivery: 409s, nothing new
        wait_for(lambda: r.llen(K.queue("records")) == 0 and r.llen(K.dead_letters) >= 16, timeout=60,
                 what="indexing")
        time.sleep(1)
        assert count(es, index) == 90
        entries = [orjson.loads(e) for e in r.lrange(K.dead_letters, 0, -1)]
        assert len(entries) == 10 + 5 + 1  # the redelivered batch repeats 5 bad ones
        assert [e["payload"] for e in entries if e["reason"].startswith("undecodable message")] == ["[{not json"]
        entry = next(e for e in entries if "item" in e)
        assert "document_parsing_exception" in entry["reason"] or "mapper_parsing_exception" in entry["reason"]
        assert entry["item"] == records[3]  # as it came: made again from the bulk's bytes, no @timestamp
        seen = es_seen(es, index, "off")
        refused = {e["item"]["off"] for e in entries if "item" in e}
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


def test_two_bulks_in_flight_to_a_frozen_node_then_a_kill_double_nothing(es_node_factory, write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    """``bulks_in_flight = 2`` (the default): while the node works on one bulk the indexer sends
    the next. A node frozen mid-way has both requests unanswered, with both batches and nothing
    more in the in-flight list; the indexer killed then, the node let go, the restarted one
    sends both again and every record is in exactly once."""
    scenario = Scenario("40 kill -9 with two bulks unanswered (node frozen)")
    node = es_node_factory()
    es = es_client(node.url)
    index = "inflight"
    cfg = write_cfg(indexer_section(node.url, index, listento="records").replace("batch_docs = 300", "batch_docs = 100"))
    inflight = K.inflight(f"{socket.gethostname()}/worker_es")
    worker = Worker(cfg, "worker_es", tmp_path).start()
    try:
        r.rpush(K.queue("records"), orjson.dumps(records(100)))
        wait_for(lambda: count(es, index) == 100, timeout=60, what="the first batch")
        os.kill(node.pid, signal.SIGSTOP)
        try:
            for start in range(100, 2000, 100):
                r.rpush(K.queue("records"), orjson.dumps(records(100, start)))
            wait_for(lambda: r.llen(inflight) == 2, timeout=30, what="two batches in flight to a frozen node")
            time.sleep(2)  # and no third: the first is not answered
            assert r.llen(inflight) == 2 and r.llen(K.queue("records")) == 17
            worker.kill()
        finally:
            os.kill(node.pid, signal.SIGCONT)
        worker.start()
        wait_for(lambda: r.llen(K.queue("records")) == 0 and r.llen(inflight) == 0 and count(es, index) >= 2000,
                 timeout=120, interval=1, what="every batch indexed after the restart")
        time.sleep(2)
        assert count(es, index) == 2000 and r.llen(K.dead_letters) == 0
        assert "recovering 2 in-flight message(s)" in worker.logfile.read_text()
        scenario.check("es", es_seen(es, index, "seq"), 2000, note="both bulks sent again: 409s")
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


def day(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT12:00:00+00:00")


def line_records(src: str, offsets: list[int], when: str) -> list[dict]:
    return [{"service": "ids", "src": src, "off": off, "logline": f"line {off}", "time": when, "seq": off}
            for off in offsets]


def hits(es: Elasticsearch, index: str) -> list[dict]:
    from elasticsearch.helpers import scan

    es.indices.refresh(index=index)
    return list(scan(es, index=index, query={"query": {"match_all": {}}}, _source=["src", "off"], size=5000))


def mark(es: Elasticsearch, index: str) -> object:
    return es.indices.get_mapping(index=index)[index]["mappings"].get("_meta", {}).get("loglines_ids")


def test_a_new_index_gets_ordered_ids_that_follow_the_offsets(es_url: str, write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    es = es_client(es_url)
    when = day(1)
    index = "ids-new-" + when[:10].replace("-", ".")
    es.options(ignore_status=404).indices.delete(index=index)
    cfg = write_cfg(indexer_section(es_url, "ids-new-%Y.%m.%d", listento="records"))
    offsets = {"f1": [n * 97 for n in range(300)], "f2": [n * 55 for n in range(200)]}
    worker = Worker(cfg, "worker_es", tmp_path).start()
    try:
        for src, offs in offsets.items():
            r.rpush(K.queue("records"), orjson.dumps(line_records(src, offs, when)))
        wait_for(lambda: count(es, index) >= 500 and r.llen(K.queue("records")) == 0, timeout=60, what="indexing")
        time.sleep(1)
        assert count(es, index) == 500 and r.llen(K.dead_letters) == 0
        assert mark(es, index) == "ordered"
        by_src: dict[str, list[tuple[int, str]]] = {}
        for hit in hits(es, index):
            assert ORDERED_ID.match(hit["_id"]), hit["_id"]
            assert hit["_id"] == ordered_line_id("ids", hit["_source"]["src"], hit["_source"]["off"])
            by_src.setdefault(hit["_source"]["src"], []).append((hit["_source"]["off"], hit["_id"]))
        heads = set()
        for src, pairs in by_src.items():
            pairs.sort()
            assert [off for off, _ in pairs] == offsets[src]
            ids = [doc_id for _, doc_id in pairs]
            assert sorted(ids, key=id_bytes) == ids  # within one file the ids follow the offsets
            assert len({id_bytes(i)[:8] for i in ids}) == 1
            heads.add(id_bytes(ids[0])[:8])
        assert len(heads) == 2
    finally:
        worker.stop()


def test_after_an_upgrade_a_redelivery_into_a_sha1_index_doubles_nothing(es_url: str, write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    """The old version (sha1 ids, no mark) indexed a batch; after the upgrade (auto) the same
    batch comes again, with new lines of that day: the old index keeps sha1 ids, so the batch
    answers 409 and nothing doubles. The next day's index is new: ordered."""
    es = es_client(es_url)
    old_day, new_day = day(3), day(2)
    old_index, new_index = ("ids-upgrade-" + d[:10].replace("-", ".") for d in (old_day, new_day))
    for name in (old_index, new_index):
        es.options(ignore_status=404).indices.delete(index=name)
    section = indexer_section(es_url, "ids-upgrade-%Y.%m.%d", listento="records")
    batch = line_records("access.log", list(range(0, 40_000, 100)), old_day)
    before = Worker(write_cfg(section.replace("max_backoff = 2", "max_backoff = 2\n        id_scheme = sha1")),
                    "worker_es", tmp_path).start()
    try:
        r.rpush(K.queue("records"), orjson.dumps(batch))
        wait_for(lambda: count(es, old_index) >= 400 and r.llen(K.queue("records")) == 0, timeout=60,
                 what="the old version's batch")
    finally:
        before.stop()
    assert mark(es, old_index) is None  # as an earlier version left it
    assert all(SHA1_ID.match(hit["_id"]) for hit in hits(es, old_index))
    after = Worker(write_cfg(section), "worker_es", tmp_path).start()
    try:
        more = line_records("access.log", list(range(40_000, 50_000, 100)), old_day)
        r.rpush(K.queue("records"), orjson.dumps(batch + more))  # the redelivery, and lines after it
        r.rpush(K.queue("records"), orjson.dumps(line_records("access.log", list(range(50_000, 60_000, 100)), new_day)))
        wait_for(lambda: count(es, new_index) >= 100 and r.llen(K.queue("records")) == 0, timeout=60,
                 what="the new version's batches")
        time.sleep(1)
        assert count(es, old_index) == 500  # 400 once, not twice, and the 100 new lines
        assert all(SHA1_ID.match(hit["_id"]) for hit in hits(es, old_index))
        assert mark(es, old_index) is None
        assert count(es, new_index) == 100 and mark(es, new_index) == "ordered"
        assert all(ORDERED_ID.match(hit["_id"]) for hit in hits(es, new_index))
        assert r.llen(K.dead_letters) == 0
        seen = es_seen(es, old_index, "seq")
        assert set(seen.values()) == {1} and len(seen) == 500
    finally:
        after.stop()


def test_indexers_racing_to_create_one_index_all_learn_ordered(es_url: str) -> None:
    """Eight processes' worth of indexers meeting a new index at once: one creates it marked,
    the others find it made and read the mark; none guesses."""
    es = es_client(es_url)
    index = "ids-race"
    es.options(ignore_status=404).indices.delete(index=index)
    start = threading.Barrier(8)

    def learn(n: int) -> bool:
        schemes = IdSchemes(es_client(es_url), "auto", f"worker_es_{n:02d}", Flags(), 2)
        start.wait()
        return schemes.ordered(index)

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(learn, range(8))) == [True] * 8
    assert mark(es, index) == "ordered"


def test_an_index_is_read_once_and_a_forced_scheme_asks_nothing(es_url: str) -> None:
    es = es_client(es_url)
    for name in ("ids-unmarked", "ids-marked"):
        es.options(ignore_status=404).indices.delete(index=name)
    es.indices.create(index="ids-unmarked")
    es.indices.create(index="ids-marked", mappings={"_meta": {"loglines_ids": "ordered"}})
    schemes = IdSchemes(es, "auto", "worker_es", Flags(), 2)
    assert schemes.ordered("ids-unmarked") is False and schemes.ordered("ids-marked") is True
    es.indices.delete(index="ids-unmarked")
    assert schemes.ordered("ids-unmarked") is False  # kept: not read again
    assert schemes.ordered("Not-A-Valid-Index-Name") is False  # refused by Elasticsearch: the bulk says why
    assert "Not-A-Valid-Index-Name" not in schemes.known
    nowhere = Elasticsearch("http://127.0.0.1:9", request_timeout=1)
    assert IdSchemes(nowhere, "ordered", "w", Flags(), 2).ordered("x") is True
    assert IdSchemes(nowhere, "sha1", "w", Flags(), 2).ordered("x") is False
