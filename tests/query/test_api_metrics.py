"""/metrics of the API worker: a real worker process (and two sharing a port) against a real
Elasticsearch and Redis, scraped over sockets and parsed by prometheus_client's own parser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from tests.query.deploy import READ, TOKEN, Deployment
from tests.support.monitoring import samples
from tests.support.procs import Worker
from tests.support.servers import RedisServer, wait_for

pytestmark = pytest.mark.slow
#: what no label may hold: an event's id, a report's name asked for, a query's values
ID, MISSING, REPORT, QUERY = "evt-5f1c9a", "gone-77d2e4", "zz-report-3b8", "yesterday-e81f"
TEMPLATES = {"/healthz", "/metrics", "/v1/events", "/v1/events/{id}", "/v1/analytics/count", "/v1/analytics/top",
             "/v1/analytics/unique", "/counter/r51/status", "/counter/r51/reports",
             "/counter/r51/reports/{report}", "other"}
PERIOD = {"customer_id": "0000000000000000", "begin_date": "2026-03", "end_date": "2026-03", "api_key": TOKEN}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _deploy(tmp: Path, redis_url: str, es_url: str, extra: str = "") -> Deployment:
    deployment = Deployment(tmp, redis_url, es_url, index="{prefix}-events", pipeline=False,
                            api_extra=extra).setup()
    lines: list[bytes] = []
    for n in range(3):
        lines += [orjson.dumps({"create": {"_index": deployment.index, "_id": f"{ID}-{n}" if n else ID}}),
                  orjson.dumps({"time": f"2026-03-0{n + 1}T10:00:00Z", "service": "metrics", "kind": "download",
                                "status": 200, "item_id": f"1/{n}", "session": f"s{n}", "robot": False})]
    assert not deployment.es.bulk(operations=b"\n".join(lines) + b"\n", refresh=True)["errors"]
    return deployment


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, es_url: str) -> Iterator[Deployment]:
    deployment = _deploy(tmp_path_factory.mktemp("apimetrics"), redis_server.url, es_url)
    try:
        yield deployment.start("worker_api")
    finally:
        deployment.close()


def scrape(deployment: Deployment) -> tuple[Samples, bytes]:
    answer = requests.get(deployment.url + "/metrics", headers=READ, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(answer.text), answer.content


def requests_by_label(parsed: Samples, name: str = "loglines_http_requests_total") -> dict[tuple[str, ...], float]:
    """(endpoint, method, status) -> count, of the api worker's series of ``name``."""
    out = {}
    for (sample, labels), n in parsed.items():
        told = dict(labels)
        if sample == name and told.get("worker") == "worker_api":
            out[(told["endpoint"], told["method"], told["status"])] = n
    return out


def grown(before: dict[tuple[str, ...], float], after: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    return {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key, 0)}


def assert_no_label_from_a_request(parsed: Samples, text: bytes) -> None:
    for marker in (ID, MISSING, REPORT, QUERY, "from=", "api_key", TOKEN):
        assert marker.encode() not in text, marker
    for (_, labels), _ in parsed.items():
        told = dict(labels)
        if "endpoint" in told and told.get("worker") == "worker_api":
            assert told["endpoint"] in TEMPLATES, told


def test_metrics_need_a_token(api: Deployment) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token-0123456789"}, {"X-Api-Key": "short"}):
        answer = requests.get(api.url + "/metrics", headers=headers, timeout=30)
        assert answer.status_code == 401, headers
        assert answer.json()["status"] == 401 and answer.headers["www-authenticate"].startswith("Bearer")
        assert b"loglines_" not in answer.content


def test_requests_are_counted_by_route_template_and_status(api: Deployment) -> None:
    before, _ = scrape(api)
    assert api.get(f"/v1/events/{ID}").status_code == 200
    assert api.get("/v1/events", **{"from": QUERY}).status_code == 400
    assert api.get(f"/v1/events/{MISSING}").status_code == 404
    assert requests.get(api.url + "/metrics", timeout=30).status_code == 401
    after, text = scrape(api)
    # exactly those, and the first scrape (counted once answered)
    assert grown(requests_by_label(before), requests_by_label(after)) == {
        ("/v1/events/{id}", "GET", "200"): 1, ("/v1/events", "GET", "400"): 1, ("/v1/events/{id}", "GET", "404"): 1,
        ("/metrics", "GET", "401"): 1, ("/metrics", "GET", "200"): 1}
    count = {dict(labels)["endpoint"]: n for (name, labels), n in after.items()
             if name == "loglines_http_request_duration_seconds_count" and dict(labels)["worker"] == "worker_api"}
    was = {dict(labels)["endpoint"]: n for (name, labels), n in before.items()
           if name == "loglines_http_request_duration_seconds_count" and dict(labels)["worker"] == "worker_api"}
    assert count["/v1/events/{id}"] - was.get("/v1/events/{id}", 0) == 2
    assert count["/v1/events"] - was.get("/v1/events", 0) == 1
    assert after[("loglines_http_requests_in_flight", (("worker", "worker_api"),))] == 0  # besides the scrape
    assert_no_label_from_a_request(after, text)


def test_reports_and_exports_are_counted_by_report_and_format(api: Deployment) -> None:
    before, _ = scrape(api)
    exported = api.get("/v1/events", format="csv", service="metrics", **{"from": "2026-03-01", "to": "2026-03-31"})
    assert exported.status_code == 200 and len(exported.text.splitlines()) == 4
    report = api.get("/counter/r51/reports/pr", headers={}, **PERIOD)
    assert report.status_code == 200, report.text
    assert api.get(f"/counter/r51/reports/{REPORT}", headers={}, **PERIOD).status_code == 404
    after, text = scrape(api)
    assert grown(requests_by_label(before), requests_by_label(after)) == {
        ("/v1/events", "GET", "200"): 1, ("/counter/r51/reports/{report}", "GET", "200"): 1,
        ("/counter/r51/reports/{report}", "GET", "404"): 1, ("/metrics", "GET", "200"): 1}

    def made(parsed: Samples, name: str, **labels: str) -> float:
        return parsed.get((name, tuple(sorted({"worker": "worker_api", **labels}.items()))), 0)

    assert made(after, "loglines_api_reports_total", report="PR") - made(before, "loglines_api_reports_total",
                                                                         report="PR") == 1
    assert made(after, "loglines_api_exports_total", format="csv") - made(before, "loglines_api_exports_total",
                                                                          format="csv") == 1
    reports = {dict(labels)["report"] for (name, labels), _ in after.items() if name == "loglines_api_reports_total"}
    assert reports == {"PR"}  # the unknown one made none
    assert_no_label_from_a_request(after, text)


def test_the_figures_reach_loglines_status_as_the_ingests_do(api: Deployment) -> None:
    assert api.get(f"/v1/events/{ID}").status_code == 200
    scrape(api)  # flushes this process's counts
    told = orjson.loads(api.loglines("status", "--json").stdout)["workers"]["worker_api"]
    assert told["type"] == "api" and told["counters"]["http_requests:/v1/events/{id}:GET:200"] >= 1
    assert told["histograms"]["http_request_seconds:/v1/events/{id}"]["count"] >= 1
    assert told["heartbeat_age_s"] is not None and told["heartbeat_age_s"] < 5  # its loop turns


def test_each_of_two_processes_answers_the_sections_totals(tmp_path: Path, redis_server: RedisServer,
                                                           es_url: str) -> None:
    deployment = _deploy(tmp_path, redis_server.url, es_url, "numprocs = 2\n")
    deployment.workers["worker_api"] = Worker(deployment.cfg, "worker_api", tmp_path / "logs",
                                              process_name="worker_api_00")
    second = Worker(deployment.cfg, "worker_api", tmp_path / "logs", process_name="worker_api_01")
    try:
        second.start()
        deployment.start("worker_api")
        wait_for(lambda: all(b"listening on" in w.logfile.read_bytes() for w in (second, deployment.workers["worker_api"])),
                 timeout=30, what="both processes listening")
        time.sleep(1.5)  # every count so far flushed (the module's worker shares the stats hash)
        base = requests_by_label(scrape(deployment)[0]).get(("/v1/events/{id}", "GET", "200"), 0)
        for _ in range(40):  # a new connection each: the kernel spreads them over both processes
            assert requests.get(deployment.url + f"/v1/events/{ID}", headers=READ, timeout=30).status_code == 200
        time.sleep(1.5)  # both flushed
        for _ in range(10):
            parsed, _ = scrape(deployment)
            assert requests_by_label(parsed)[("/v1/events/{id}", "GET", "200")] == base + 40
    finally:
        second.stop()
        deployment.close()


def test_without_redis_queries_are_answered_and_the_counts_wait_in_memory(tmp_path: Path, es_url: str) -> None:
    server = RedisServer(tmp_path / "redis").start()
    deployment = _deploy(tmp_path, server.url, es_url)
    try:
        deployment.start("worker_api")
        server.kill()
        for _ in range(3):
            assert deployment.get(f"/v1/events/{ID}").status_code == 200
        down = requests.get(deployment.url + "/metrics", headers=READ, timeout=30)
        assert down.status_code == 503 and down.headers["retry-after"]
        server.start()
        wait_for(lambda: requests.get(deployment.url + "/metrics", headers=READ, timeout=30).status_code == 200,
                 timeout=30, what="/metrics with Redis back")
        assert requests_by_label(scrape(deployment)[0])[("/v1/events/{id}", "GET", "200")] == 3
    finally:
        deployment.close()
        server.kill()
