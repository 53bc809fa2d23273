"""The API worker against a real Elasticsearch, over real sockets: tokens, parameters, a 200,000
record export with flat memory, deletes and their audit, analytics, and `loglines query`."""

from __future__ import annotations

import csv
import io
import os
import pty
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import requests

from tests.query.deploy import ADMIN, ADMINISTER, READ, TOKEN, Deployment
from tests.support.procs import REPO
from tests.support.servers import RedisServer

pytestmark = pytest.mark.slow
EXPORTED = 200_000
ERASE = 1000
START = datetime(2026, 3, 1, tzinfo=UTC)
RANGE = {"from": "2026-03-01", "to": "2026-03-31"}


def _documents() -> Iterator[tuple[str, dict[str, object]]]:
    for n in range(EXPORTED):
        yield f"exp-{n}", {"time": (START + timedelta(seconds=n)).isoformat(), "seq": n, "service": "exp",
                           "kind": ("download", "item", "other")[n % 3], "status": (200, 304, 404)[n % 3],
                           "client_ip": f"10.{n % 7}.0.1", "url": f"/bitstream/handle/1/{n % 500}/a.pdf",
                           "item_id": f"1/{n % 500}", "user_agent": "Mozilla/5.0 (X11) Firefox/121.0",
                           "robot": n % 10 == 0, "session": f"s{n % 1000}"}
    for n in range(ERASE):
        yield f"erase-{n}", {"time": (START + timedelta(hours=1, seconds=n)).isoformat(), "seq": n,
                             "service": "erase", "client_ip": f"192.0.2.{n % 4}", "user": f"u{n % 10}",
                             "kind": "download", "status": 200}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, es_url: str) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path_factory.mktemp("api"), redis_server.url, es_url, index="{prefix}-events",
                            pipeline=False).setup()
    try:
        batch: list[bytes] = []
        for doc_id, doc in _documents():
            batch += [orjson.dumps({"create": {"_index": deployment.index, "_id": doc_id}}), orjson.dumps(doc)]
            if len(batch) >= 20_000:
                assert not deployment.es.bulk(operations=b"\n".join(batch) + b"\n")["errors"]
                batch = []
        if batch:
            assert not deployment.es.bulk(operations=b"\n".join(batch) + b"\n")["errors"]
        assert deployment.count() == EXPORTED + ERASE
        yield deployment.start("worker_api")
    finally:
        deployment.close()


ENDPOINTS = [("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/v1/events"), ("GET", "/v1/events/exp-1"), ("DELETE", "/v1/events/exp-1"),
             ("DELETE", "/v1/events?service=exp"), ("GET", "/v1/analytics/count"), ("GET", "/v1/analytics/top?field=kind"),
             ("GET", "/v1/analytics/unique?field=session"), ("GET", "/counter/r51/status"),
             ("GET", "/counter/r51/reports"), ("GET", "/counter/r51/reports/pr"), ("GET", "/counter/r51/reports/ir"),
             ("GET", "/nowhere")]


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_every_endpoint_needs_a_token(api: Deployment, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token-0123456789"}, {"X-Api-Key": "short"}):
        answer = requests.request(method, api.url + path, headers=headers, timeout=30)
        assert answer.status_code == 401, (path, headers)  # an unknown path too: nothing answers unasked
        assert answer.headers["content-type"] == "application/json"
        if path.startswith("/counter/"):
            assert answer.json()["Code"] == 2020  # a SUSHI Exception
        else:
            assert answer.json()["status"] == 401 and answer.headers["www-authenticate"].startswith("Bearer")
    assert api.count() == EXPORTED + ERASE  # nothing was deleted on the way


@pytest.mark.parametrize("params, parameter", [
    ({"from": "yesterday"}, "from"), ({"to": "2026-02-30"}, "to"), ({"range": "7W"}, "range"),
    ({"range": "7D", "from": "2026-01-01"}, "range"), ({"from": "2020-01-01", "to": "2026-01-01"}, "from"),
    ({"size": "0"}, "size"), ({"size": "9999999999"}, "size"), ({"size": "ten"}, "size"),
    ({"format": "xml"}, "format"), ({"sort": "-nosuchfield"}, "sort"), ({"sort": "user_agent.text"}, "sort"),
    ({"nosuchfield": "1"}, "nosuchfield"), ({"$where": "1"}, "$where"), ({"q": "x" * 1001}, "q"),
])
def test_bad_parameters_are_a_json_400_naming_the_parameter(api: Deployment, params: dict[str, str],
                                                            parameter: str) -> None:
    answer = api.get("/v1/events", **params)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["parameter"] == parameter and body["status"] == 400 and parameter in body["error"]
    assert "Traceback" not in answer.text


@pytest.mark.parametrize("path, params, parameter", [
    ("/v1/analytics/count", {"interval": "fortnight"}, "interval"),
    ("/v1/analytics/count", {"by": "user_agent.text"}, "by"), ("/v1/analytics/count", {"tz": "Mars/Olympus"}, "tz"),
    ("/v1/analytics/top", {}, "field"), ("/v1/analytics/top", {"field": "kind", "n": "5000"}, "n"),
    ("/v1/analytics/unique", {"field": "nothing"}, "field"),
    ("/v1/analytics/unique", {"field": "session", "precision_threshold": "50000"}, "precision_threshold"),
])
def test_bad_analytics_parameters_too(api: Deployment, path: str, params: dict[str, str], parameter: str) -> None:
    answer = api.get(path, **{**RANGE, **params})
    assert answer.status_code == 400 and answer.json()["parameter"] == parameter, answer.text


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_an_export_of_200000_records_streams_with_flat_memory_and_holds_each_once(api: Deployment) -> None:
    pid = api.workers["worker_api"].proc.pid  # type: ignore[union-attr]
    warm = api.get("/v1/events", service="exp", size="5000", format="ndjson", **RANGE)
    assert warm.status_code == 200 and len(warm.content.splitlines()) == 5000
    baseline = _rss(pid)
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(_rss(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seen: set[int] = set()
    lines = 0
    started = time.monotonic()
    with requests.get(api.url + "/v1/events", params={"service": "exp", "size": str(EXPORTED), "format": "ndjson",
                                                      **RANGE}, headers=READ, stream=True, timeout=600) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-ndjson"
        assert "content-length" not in answer.headers  # streamed, not held and sent
        for line in answer.iter_lines(chunk_size=65536):
            seen.add(orjson.loads(line)["seq"])
            lines += 1
    done.set()
    sampler.join()
    took = time.monotonic() - started
    assert lines == EXPORTED and seen == set(range(EXPORTED))  # each record once
    peak = max(samples)
    quarter = len(samples) // 4
    early, late = max(samples[:quarter]), max(samples[-quarter:])
    print(f"\nexport of {EXPORTED:,} records: {took:.1f} s, API worker RSS {baseline / 2**20:.1f} MiB before, "
          f"peak {peak / 2**20:.1f} MiB, first quarter {early / 2**20:.1f}, last quarter {late / 2**20:.1f}")
    assert peak - baseline < 40 * 2**20, "memory grew with the export"
    assert late - early < 8 * 2**20, "memory kept growing"


def test_formats_and_order(api: Deployment) -> None:
    as_json = api.get("/v1/events", service="exp", size="10", sort="-seq", **RANGE)
    assert as_json.status_code == 200 and [e["seq"] for e in as_json.json()] == list(range(EXPORTED - 1, EXPORTED - 11, -1))
    assert as_json.headers["x-range-from"] == "2026-03-01T00:00:00.000Z"
    by_accept = api.get("/v1/events", headers={**READ, "Accept": "text/csv"}, service="exp", size="3",
                        fields="seq,kind,robot", **RANGE)
    assert by_accept.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(by_accept.text))) == [["seq", "kind", "robot"], ["0", "download", "true"],
                                                            ["1", "item", "false"], ["2", "other", "false"]]
    tsv = api.get("/v1/events", service="exp", size="2", format="tsv", fields="_id,seq", sort="seq", **RANGE)
    assert tsv.text == "_id\tseq\nexp-0\t0\nexp-1\t1\n"
    filtered = api.get("/v1/events", service="exp", kind="download|item", status="200..250", size="100000",
                       format="ndjson", q="Firefox", **RANGE)
    records = [orjson.loads(line) for line in filtered.content.splitlines()]
    assert len(records) == EXPORTED // 3 + 1 and all(r["kind"] == "download" and r["status"] == 200 for r in records)
    one = api.get("/v1/events/exp-42")
    assert one.status_code == 200 and one.json()["seq"] == 42 and one.json()["_id"] == "exp-42"
    assert api.get("/v1/events/nothing-like-it").status_code == 404


def test_analytics_count_top_unique(api: Deployment) -> None:
    by_day = api.get("/v1/analytics/count", service="exp", interval="day", by="kind", **RANGE).json()
    assert by_day["total"] == EXPORTED and by_day["columns"] == ["start", "kind", "count"]
    assert sum(row[2] for row in by_day["rows"]) == EXPORTED
    assert by_day["rows"][0] == ["2026-03-01T00:00:00Z", "download", 28800]
    top = api.get("/v1/analytics/top", service="exp", field="item_id", n="3", **RANGE).json()
    assert [row[1] for row in top["rows"]] == [400, 400, 400] and top["error_bound"] == 0
    counted = api.get("/v1/analytics/count", service="exp", counted="yes", **RANGE).json()
    assert counted["rows"] == [[sum(1 for n in range(EXPORTED) if n % 3 < 2 and n % 10)]]
    unique = api.get("/v1/analytics/unique", service="exp", field="session", **RANGE).json()
    assert unique["approximate"] is True and unique["precision_threshold"] == 3000 and unique["rows"] == [[1000]]
    coarse = api.get("/v1/analytics/unique", service="exp", field="session", precision_threshold="100", **RANGE).json()
    assert coarse["precision_threshold"] == 100 and 900 < coarse["rows"][0][0] < 1100
    as_csv = api.get("/v1/analytics/top", service="exp", field="kind", format="csv", **RANGE)
    assert as_csv.text.splitlines() == ["kind,count", "download,66667", "item,66667", "other,66666"]


def test_delete_by_query_removes_exactly_the_matching_records_and_is_audited(api: Deployment) -> None:
    erase = "/v1/events?service=erase&client_ip=192.0.2.1"
    assert requests.delete(api.url + erase, timeout=30).status_code == 401
    refused = requests.delete(api.url + erase, headers=READ, timeout=30)
    assert refused.status_code == 403 and "admin" in refused.json()["error"]
    dry = requests.delete(api.url + erase + "&dry_run=yes", headers=ADMINISTER, timeout=30).json()
    assert dry == {**dry, "matched": ERASE // 4, "dry_run": True}
    assert requests.delete(api.url + "/v1/events", headers=ADMINISTER, timeout=30).status_code == 400  # names nothing
    done = requests.delete(api.url + erase, headers=ADMINISTER, timeout=120)
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["deleted"] == result["matched"] == ERASE // 4 and result["status"] == "done"
    left = [orjson.loads(line) for line in api.get("/v1/events", service="erase", size="5000", format="ndjson",
                                                   **RANGE).content.splitlines()]
    assert sorted(r["seq"] for r in left) == [n for n in range(ERASE) if n % 4 != 1]
    assert api.count() == EXPORTED + ERASE - ERASE // 4
    audit = api.es.search(index=f"{api.prefix}-audit", query={"term": {"who": "ops"}})["hits"]["hits"]
    record = audit[0]["_source"]
    assert len(audit) == 1 and record["deleted"] == ERASE // 4 and record["matched"] == ERASE // 4
    assert record["status"] == "done" and record["action"] == "delete_by_query" and record["index"] == api.index
    assert record["selection"]["client_ip"] == "192.0.2.1" and record["selection"]["service"] == "erase"
    assert record["query"]["bool"]["filter"] and datetime.fromisoformat(record["time"]) > datetime.now(UTC) - timedelta(minutes=5)
    assert TOKEN not in orjson.dumps(record).decode() and ADMIN not in orjson.dumps(record).decode()
    one = requests.delete(api.url + "/v1/events/erase-0", headers=ADMINISTER, timeout=60)
    assert one.status_code == 200 and one.json()["deleted"] == 1
    assert requests.delete(api.url + "/v1/events/erase-0", headers=ADMINISTER, timeout=60).status_code == 404
    assert api.get("/v1/events/erase-0").status_code == 404 and api.get("/v1/events/erase-2").status_code == 200


def test_loglines_query_exports_without_the_api_worker_with_a_progress_bar_on_a_terminal(
        api: Deployment, tmp_path: Path) -> None:
    out = tmp_path / "export.csv"
    command = [sys.executable, "-m", "pipeline", "-c", str(api.cfg), "query", "service=exp", "--from", "2026-03-01",
               "--to", "2026-03-31", "--format", "csv", "--fields", "seq,kind", "--limit", "50000", "-o", str(out)]
    leader, follower = pty.openpty()
    shown = bytearray()

    def read() -> None:  # the terminal is read while the command runs, so that it never blocks on it
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=follower, timeout=300, cwd=api.tmp,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(follower)
        reader.join(10)
        os.close(leader)
    assert done.returncode == 0
    assert b"100.0%  50,000 / 50,000 events" in shown and b"wrote 50,000 events" in shown
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["seq", "kind"] and len(rows) == 50_001 and rows[-1] == ["49999", "item"]
    counted = api.loglines("query", "service=exp", "--from", "2026-03-01", "--to", "2026-03-31", "--count")
    assert counted.stdout.strip() == str(EXPORTED) and counted.stderr == ""
