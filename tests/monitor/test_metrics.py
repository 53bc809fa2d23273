"""/metrics of the monitor and of the HTTP ingest: real worker processes, a real Redis, scrapes
over sockets parsed by prometheus_client's own parser; status and /metrics agree; 10,000
distinct client IPs through the pipeline add no series."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import orjson
import redis

from pipeline.cli import main
from pipeline.core.keys import Keys
from pipeline.monitor import figures
from tests.support.monitoring import get, samples, value
from tests.support.procs import Worker
from tests.support.servers import free_port, wait_for

K = Keys()
TOKEN = "prometheus-scrape-token-0123456789"


def pipeline_cfg(write_cfg, tmp_path: Path, extra: str = "", monitor: str = "") -> tuple[Path, int]:  # type: ignore[no-untyped-def]
    port = free_port()
    (tmp_path / "tokens").write_text(f"prometheus:{TOKEN}\n")
    (tmp_path / "access.log").write_text("")
    cfg = write_cfg(f"""
        [logger_access]
        type = watcher
        logfile = {tmp_path / 'access.log'}
        pushto = access
        batch_ms = 20

        [worker_parse]
        type = parser
        listento = access
        plugin = accesslog
        pushto = downloads
        other_queue = other

        [logger_downloads]
        type = filelogger
        listento = downloads
        logfile = {tmp_path / 'downloads.ndjson'}
        format = ndjson

        [logger_other]
        type = filelogger
        listento = other
        logfile = {tmp_path / 'other.log'}

        [worker_monitor]
        type = monitor
        listen = 127.0.0.1:{port}
        tokens_file = {tmp_path / 'tokens'}
        check_s = 0.2
        sample_s = 0.2
        disabled_rules = supervisord_down
        {monitor}
        {extra}
    """)
    return cfg, port


def access_line(n: int, ip: str = "192.0.2.1") -> str:
    return (f'{ip} - - [10/Oct/2026:13:55:36 +0000] "GET /bitstream/handle/1234/{n}/paper.pdf HTTP/1.1" '
            f'200 2326 "-" "Mozilla/5.0 seq={n}"')


def start(cfg: Path, tmp_path: Path, *names: str) -> list[Worker]:
    return [Worker(cfg, name, tmp_path).start() for name in names]


WORKERS = ("logger_access", "worker_parse", "logger_downloads", "logger_other", "worker_monitor")


def test_metrics_parse_need_a_password_or_token_and_agree_with_status(write_cfg, r: redis.Redis, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                       capsys) -> None:
    cfg, port = pipeline_cfg(write_cfg, tmp_path)
    workers = start(cfg, tmp_path, *WORKERS)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(base + "/healthz", ("admin", "test-password"))[0] == 200, timeout=20,
                 what="the monitor's first round of checks")
        with (tmp_path / "access.log").open("a") as handle:
            handle.write("\n".join(access_line(n) for n in range(300)) + "\nnot an access line\n")
        wait_for(lambda: r.hget(K.stats, "logger_downloads") == b"300", timeout=30, what="300 downloads")
        time.sleep(0.5)  # a round of checks sees the dead letter

        assert get(base + "/metrics")[0] == 401
        assert get(base + "/metrics", ("admin", "wrong"))[0] == 401
        assert get(base + "/metrics", token="not-the-token-at-all-00")[0] == 401
        assert get(base + "/", ("nobody", "test-password"))[0] == 401
        assert get(base + "/nowhere")[0] == 401  # not even a 404 unasked
        status, by_token = get(base + "/metrics", token=TOKEN)
        assert status == 200
        code, text = get(base + "/metrics", ("admin", "test-password"))
        assert code == 200
        parsed = samples(text.decode())
        assert parsed.keys() == samples(by_token.decode()).keys()

        assert main(["-c", str(cfg), "status", "--json"]) == 0
        told = orjson.loads(capsys.readouterr().out)
        for worker in ("logger_access", "worker_parse", "logger_downloads"):
            assert value(parsed, "loglines_worker_items_in_total", worker=worker,
                         type=told["workers"][worker]["type"]) == told["workers"][worker]["items_total"]
        assert value(parsed, "loglines_worker_items_in_total", worker="logger_access", type="watcher") == 301
        assert value(parsed, "loglines_worker_items_out_total", worker="worker_parse", type="parser") == 300
        assert value(parsed, "loglines_worker_items_out_total", worker="logger_downloads", type="filelogger") >= 300
        assert value(parsed, "loglines_dead_letters", redis="redis") == told["dead_letters"] == 1
        for queue, length in told["queues"].items():
            assert value(parsed, "loglines_queue_length", queue=queue) == length
        assert value(parsed, "loglines_redis_up", redis="redis") == 1
        assert value(parsed, "loglines_worker_batch_duration_seconds_count", worker="worker_parse") >= 1
        assert value(parsed, "loglines_watcher_lag_bytes", worker="logger_access",
                     file=str(tmp_path / "access.log")) == 0
        assert value(parsed, "loglines_worker_heartbeat_age_seconds", worker="worker_parse", type="parser") < 30
        assert value(parsed, "loglines_monitor_checks_total") >= 1

        code, health = get(base + "/healthz", ("admin", "test-password"))
        report = json.loads(health)
        assert code == 503 and list(report["failing"]) == ["dead_letters_grew"], report
        r.delete(K.dead_letters)  # purged: nothing grew any more
        wait_for(lambda: get(base + "/healthz", token=TOKEN)[0] == 200, timeout=20, what="healthy")
        assert json.loads(get(base + "/healthz", token=TOKEN)[1])["status"] == "ok"
    finally:
        for w in workers:
            w.stop()


def series(text: bytes) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return set(samples(text.decode()))


def test_10000_distinct_client_ips_add_no_series(write_cfg, r: redis.Redis, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ingest = free_port()
    cfg, port = pipeline_cfg(write_cfg, tmp_path, extra=f"""
        [worker_ingest]
        type = http
        pushto = events
        tokens_file = {tmp_path / 'tokens'}
        listen = 127.0.0.1:{ingest}

        [logger_events]
        type = filelogger
        listento = events
        logfile = {tmp_path / 'events.ndjson'}
        format = ndjson
    """)
    workers = start(cfg, tmp_path, *WORKERS, "worker_ingest", "logger_events")
    monitor, http = f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{ingest}/metrics"

    def post(events: list[dict[str, object]]) -> int:
        body = b"\n".join(orjson.dumps(e) for e in events)
        request = urllib.request.Request(f"http://127.0.0.1:{ingest}/v1/events", data=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)

    def feed(first: int, count: int) -> None:
        ips = [f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}" for n in range(first, first + count)]
        with (tmp_path / "access.log").open("a") as handle:
            handle.write("\n".join(access_line(first + i, ip) for i, ip in enumerate(ips)) + "\n")
        for at in range(0, count, 500):
            assert post([{"client_ip": ip, "seq": first + at + i} for i, ip in enumerate(ips[at:at + 500])]) == 202

    try:
        wait_for(lambda: get(http.replace("/metrics", "/readyz"), token=TOKEN)[0] == 200, timeout=30, what="ingest")
        feed(0, 50)  # every kind of series there is, once
        wait_for(lambda: r.hget(K.stats, "logger_downloads") == b"50" and r.hget(K.stats, "logger_events") == b"50",
                 timeout=30, what="the first 50")
        get(http, token=TOKEN)  # a scrape of the ingest is a request too: counted from now on
        beating = [f'loglines_worker_heartbeat_age_seconds{{type="{t}",worker="{w}"}}'.encode()
                   for w, t in (("logger_access", "watcher"), ("worker_parse", "parser"))]
        wait_for(lambda: all(b in get(monitor, token=TOKEN)[1] for b in beating), timeout=30,
                 what="every heartbeat")  # a watcher's first comes after a few seconds
        time.sleep(1.5)  # a round of checks and a stats flush past them
        before = series(get(monitor, token=TOKEN)[1]) | series(get(http, token=TOKEN)[1])
        feed(50, 10_000)
        wait_for(lambda: r.hget(K.stats, "logger_downloads") == b"10050"
                 and r.hget(K.stats, "logger_events") == b"10050", timeout=120, what="10,000 more")
        time.sleep(1.5)
        monitor_text, http_text = get(monitor, token=TOKEN)[1], get(http, token=TOKEN)[1]
        after = series(monitor_text) | series(http_text)
        assert after == before, (after - before, before - after)
        assert len(after) < 1000
        assert not re.search(rb'"10\.\d+\.\d+\.\d+"', monitor_text + http_text)
        parsed = samples(http_text.decode())
        assert value(parsed, "loglines_http_events_total", worker="worker_ingest") == 10_050
        assert value(parsed, "loglines_http_requests_total", worker="worker_ingest", endpoint="/v1/events",
                     method="POST", status="202") == 21
        assert get(http)[0] == 401  # the ingest's /metrics wants a token too
        assert value(parsed, "loglines_http_request_duration_seconds_count", worker="worker_ingest",
                     endpoint="/v1/events") == 21
        assert value(parsed, "loglines_http_requests_in_flight", worker="worker_ingest") == 0  # besides the scrape
        # the monitor's /metrics has the same request figures (the ingest's scrape flushed them)
        whole = samples(get(monitor, token=TOKEN)[1].decode())
        for name, labels in (("loglines_http_requests_total", {"method": "POST", "status": "202"}),
                             ("loglines_http_request_duration_seconds_count", {})):
            assert value(whole, name, worker="worker_ingest", endpoint="/v1/events", **labels) == 21
    finally:
        for w in workers:
            w.stop()


def test_the_oldest_unshipped_line_is_at_least_as_old_as_the_first_look_past_the_offset(r: redis.Redis,
                                                                                        tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("x" * 100)
    files = [{"path": str(log), "offset": 40, "size": 100, "lag": 60}]
    now = time.time()
    figures.note_sizes(r, K, "w", files, now - 500)  # seen 100 bytes long 500 s ago
    figures.note_sizes(r, K, "w", [dict(files[0], size=100)], now - 100)  # not grown: no new note
    import os

    os.utime(log, (now - 50, now - 50))
    ages = figures.unshipped_ages(r, K, "w", files, now)
    assert 499 <= ages[str(log)] <= 501  # the look, not the file's mtime (50 s), bounds it
    shipped = [{"path": str(log), "offset": 100, "size": 100, "lag": 0}]
    assert figures.unshipped_ages(r, K, "w", shipped, now) == {str(log): 0.0}
    figures.note_sizes(r, K, "w", shipped, now)  # the note is behind the reader now: dropped
    assert orjson.loads(r.hget(K.monitor("sizes", "w"), str(log))) == []
    unseen = [{"path": str(tmp_path / "elsewhere"), "offset": 0, "size": None, "lag": None}]
    assert figures.unshipped_ages(r, K, "w", unseen, now) == {str(tmp_path / "elsewhere"): None}
