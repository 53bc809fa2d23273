"""The tracker forwarder against a real local HTTP server playing IRUS."""

from __future__ import annotations

import configparser
import textwrap
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis

from pipeline import config
from pipeline.core.keys import Keys
from pipeline.plugins import repository
from pipeline.sinks.httpclient import retry_after
from tests.support.faults import Scenario
from tests.support.procs import Worker
from tests.support.servers import wait_for
from tests.support.tracker_server import TrackerServer

K = Keys()
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def line(path: str, status: int = 200, agent: str = UA, ip: str = "192.0.2.10", when: str = "10/Oct/2024:13:55:36 +0200",
         referrer: str = "-", xff: str | None = None) -> str:
    text = f'{ip} - - [{when}] "GET {path} HTTP/1.1" {status} 1234 "{referrer}" "{agent}"'
    return text + (f' "{xff}"' if xff else "")


def tracker_cfg(write_cfg, url: str, extra: str = "") -> Path:  # type: ignore[no-untyped-def]
    return write_cfg(textwrap.dedent(f"""
        [worker_irus]
        type = tracker
        listento = events
        repository_plugin = repository
        endpoint_url = {url}
        success_queue = sent
        other_queue = skipped
        pauseonfail = 0.2
        max_backoff = 2
        opt_oai_host = repo.example.ac.uk
        opt_base_url = https://repo.example.ac.uk
    """) + extra)


def push_lines(r: redis.Redis, lines: list[str], start: int = 0) -> None:
    items = [{"service": "repo", "logline": text, "src": "f1", "off": start + n * 1000} for n, text in enumerate(lines)]
    for i in range(0, len(items), 50):
        r.rpush(K.queue("events"), orjson.dumps(items[i:i + 50]))


MIXED = [
    (line("/bitstream/handle/123456789/42/thesis.pdf?sequence=1", referrer="https://www.example.org/"), "Request"),
    (line("/jspui/bitstream/123456789/43/1/paper.pdf"), "Request"),
    (line("/handle/123456789/42"), "Investigation"),
    (line("/1234/1/article.pdf", ip="2001:db8::7"), "Request"),
    (line("/id/eprint/1234/"), "Investigation"),
    (line("/bitstream/handle/123456789/42/thesis.pdf.jpg?sequence=3"), None),  # thumbnail
    (line("/1234/1.hassmallThumbnailVersion/article.pdf"), None),  # thumbnail
    (line("/bitstream/handle/123456789/42/thesis.pdf", agent=BOT), None),  # robot
    (line("/bitstream/handle/123456789/42/thesis.pdf", status=206), None),  # partial content
    (line("/bitstream/handle/123456789/44/missing.pdf", status=404), None),
    (line("/bitstream/handle/123456789/42/thesis.pdf", status=304), "Request"),
    (line("/bitstream/handle/123456789/42/thesis.pdf"), "Request"),  # a repeat: the tracker dedupes
    (line("/static/style.css"), None),
    (line("/1234/1/article.pdf", ip="10.0.0.1", xff="198.51.100.23, 10.0.0.1"), "Request"),
]


def test_repository_plugin_builds_irus_parameters() -> None:
    c = configparser.ConfigParser(interpolation=None)
    c.read_string("[t]\nopt_oai_host = repo.example.ac.uk\nopt_base_url = https://repo.example.ac.uk/\n"
                  "rfr_id = repo.example.ac.uk\n")
    pl = repository.parse({"logline": MIXED[0][0]})
    assert repository.get_openurl_params(c, "t", pl) == {
        "url_ver": "Z39.88-2004",
        "url_tim": "2024-10-10T11:55:36Z",
        "rft_dat": "Request",
        "req_id": "192.0.2.10",
        "req_dat": UA,
        "rft.artnum": "oai:repo.example.ac.uk:123456789/42",
        "svc_dat": "https://repo.example.ac.uk/bitstream/handle/123456789/42/thesis.pdf?sequence=1",
        "rfr_dat": "https://www.example.org/",
        "rfr_id": "repo.example.ac.uk",
    }
    robot = repository.parse({"logline": MIXED[7][0]})
    assert repository.get_openurl_params(c, "t", robot) == {} and robot["excluded"] == "robot user agent"
    partial = repository.parse({"logline": MIXED[8][0]})
    assert repository.get_openurl_params(c, "t", partial) == {} and "206" in partial["excluded"]


def test_xff_pseudonymisation_and_double_click_options() -> None:
    c = configparser.ConfigParser(interpolation=None)
    c.read_string("[t]\nopt_oai_host = h\nopt_use_xff = yes\nopt_pseudonymise_salt = pepper\nopt_double_click = yes\n")
    first = repository.get_openurl_params(c, "t", repository.parse({"logline": MIXED[-1][0]}))
    import hashlib

    assert first["req_id"] == hashlib.sha256(b"pepper198.51.100.23").hexdigest()
    again = repository.parse({"logline": MIXED[-1][0]})
    assert repository.get_openurl_params(c, "t", again) == {} and "double click" in again["excluded"]


def test_retry_after_header() -> None:
    assert retry_after("7") == 7.0 and retry_after(None) == 0.0 and retry_after("soon") == 0.0
    assert 0 < retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))) <= 31
    # a server asking for ages (or for infinity) gets an hour: the wait stays a wait, never an overflow
    assert retry_after("1e20") == retry_after("inf") == retry_after("Fri, 31 Dec 9999 23:59:59 GMT") == 3600.0
    assert retry_after("nan") == retry_after("-5") == 0.0


def test_mixed_log_produces_exactly_the_expected_requests(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    with TrackerServer() as server:
        cfg = tracker_cfg(write_cfg, server.url)
        worker = Worker(cfg, "worker_irus", tmp_path).start()
        try:
            push_lines(r, [text for text, _ in MIXED])
            expected = [kind for _, kind in MIXED if kind]
            wait_for(lambda: r.llen(K.queue("events")) == 0 and len(server.accepted()) == len(expected)
                     and r.llen(K.queue("sent")) > 0 and r.llen(K.queue("skipped")) > 0, what="all events")
            time.sleep(0.5)
            got = server.accepted()
            assert [p["rft_dat"] for p in got] == expected
            assert got[3]["req_id"] == "2001:db8::7" and got[3]["rft.artnum"] == "oai:repo.example.ac.uk:1234"
            assert got[-1]["req_id"] == "10.0.0.1"  # X-Forwarded-For only when configured
            assert all(p["url_ver"] == "Z39.88-2004" and p["rfr_id"] == "repo.example.ac.uk" for p in got)
            assert got[0]["rfr_dat"] == "https://www.example.org/" and got[1]["rfr_dat"] == ""
            skipped = [i for raw in r.lrange(K.queue("skipped"), 0, -1) for i in orjson.loads(raw)]
            assert len(skipped) == len(MIXED) - len(expected) and all(s["excluded"] for s in skipped)
            sent = [i for raw in r.lrange(K.queue("sent"), 0, -1) for i in orjson.loads(raw)]
            assert len(sent) == len(expected)
        finally:
            worker.stop()


def test_outage_500_then_429_then_recovery_loses_nothing(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    outage_until = time.monotonic() + 60
    throttled = {"left": 5}

    def respond(params: dict[str, str]) -> tuple[int, dict[str, str]]:
        if time.monotonic() < outage_until:
            return 500, {}
        if throttled["left"] > 0:
            throttled["left"] -= 1
            return 429, {"Retry-After": "1"}
        return 200, {}

    with TrackerServer() as server:
        server.respond = respond
        cfg = tracker_cfg(write_cfg, server.url, "retries = 1000\n")
        worker = Worker(cfg, "worker_irus", tmp_path).start()
        try:
            lines = [line(f"/bitstream/handle/123456789/{n}/f.pdf") for n in range(200)]
            push_lines(r, lines)
            wait_for(lambda: len(server.accepted()) >= 200, timeout=180, interval=0.5, what="recovery")
            time.sleep(1)
            counts = Counter(p["svc_dat"] for p in server.accepted())
            assert len(counts) == 200 and max(counts.values()) == 1
            assert throttled["left"] == 0 and any(s == 500 for _, _, s in server.requests)
            Scenario("11 tracker 500 for 60 s, then 429 with Retry-After").check(
                "tracker", Counter(int(p["svc_dat"].split("/")[-2]) for p in server.accepted()), 200,
                note=f"{sum(1 for _, _, s in server.requests if s != 200)} refused requests")
            log = (tmp_path / "worker_irus.log").read_text()
            assert "tracker failed" in log and "HTTP 429" in log
        finally:
            worker.stop()


def test_failed_events_wait_then_retry_on_schedule_and_on_demand(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    from pipeline.cli import main

    state = {"up": False}
    with TrackerServer() as server:
        server.respond = lambda p: (200, {}) if state["up"] else (503, {})
        cfg = tracker_cfg(write_cfg, server.url, "retries = 2\nretry_failed_every = 3\n")
        push_lines(r, [line(f"/{n}/1/a.pdf", when="01/Mar/2024:10:00:00 +0000") for n in range(1, 4)])
        worker = Worker(cfg, "worker_irus", tmp_path).start()
        try:
            wait_for(lambda: r.llen(K.failed) == 3, timeout=60, what="3 parked events")
            entry = orjson.loads(r.lindex(K.failed, 0))
            assert entry["url_tim"] == "2024-03-01T10:00:00Z" and entry["url"].startswith(server.url + "?")
            assert "url_tim=2024-03-01T10%3A00%3A00Z" in entry["url"] and "503" in entry["reason"]
            worker.stop()
            state["up"] = True
            assert main(["-c", str(cfg), "dlq", "replay", "--failed", "0"]) == 0
            worker.start()
            wait_for(lambda: len(server.accepted()) == 3 and r.llen(K.failed) == 0, timeout=60,
                     what="scheduled retry of the others")
            assert {p["url_tim"] for p in server.accepted()} == {"2024-03-01T10:00:00Z"}
        finally:
            worker.stop()


def test_other_4xx_is_dead_lettered_with_the_response(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    with TrackerServer() as server:
        server.respond = lambda p: (400, {}) if "/7/" in p["svc_dat"] else (200, {})
        cfg = tracker_cfg(write_cfg, server.url)
        worker = Worker(cfg, "worker_irus", tmp_path).start()
        try:
            push_lines(r, [line(f"/{n}/1/a.pdf") for n in range(5, 10)])
            wait_for(lambda: len(server.accepted()) == 4 and r.llen(K.dead_letters) == 1, what="4 sent, 1 refused")
            entry = orjson.loads(r.lindex(K.dead_letters, 0))
            assert "HTTP 400" in entry["reason"] and "tracker says no" in entry["reason"]
            seen = Counter(int(p["svc_dat"].split("/")[-3]) - 5 for p in server.accepted())
            Scenario("11 tracker refusing one event with 400").check(
                "tracker", seen + Counter([2]), 5, note="the 400 dead-lettered with the response")
            assert entry["item"]["logline"].count("/7/1/a.pdf") == 1
        finally:
            worker.stop()


@pytest.mark.slow
def test_sigkill_mid_stream_loses_nothing_and_resends_at_most_one(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    with TrackerServer() as server:
        cfg = tracker_cfg(write_cfg, server.url, "ratelimit = 0.01\n")
        worker = Worker(cfg, "worker_irus", tmp_path).start()
        try:
            push_lines(r, [line(f"/bitstream/handle/1/{n}/f.pdf") for n in range(600)])
            kills = 0
            for target in (100, 250, 400):
                wait_for(lambda t=target: len(server.accepted()) >= t, timeout=60, what=f"{target} sent")
                worker.restart()
                kills += 1
            wait_for(lambda: len({p["svc_dat"] for p in server.accepted()}) == 600, timeout=120, what="all 600")
            time.sleep(1)
            counts = Counter(p["svc_dat"] for p in server.accepted())
            assert len(counts) == 600
            assert sum(c - 1 for c in counts.values()) <= kills  # the documented bound: one per crash
        finally:
            worker.stop()


def test_ratelimit_holds_per_process(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    with TrackerServer() as server:
        cfg = tracker_cfg(write_cfg, server.url, "ratelimit = 0.25\n")
        worker = Worker(cfg, "worker_irus", tmp_path).start()
        try:
            push_lines(r, [line(f"/{n}/1/a.pdf") for n in range(1, 7)])
            wait_for(lambda: len(server.accepted()) == 6, what="6 events")
            times = [t for t, _, _ in server.requests]
            assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.2  # 0.25 minus arrival jitter
        finally:
            worker.stop()


def test_original_style_plugin_works_unchanged(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "oldpirus.py").write_text(
        "import json, re\n"
        "def parseline(jmsg):\n"
        "    d = json.loads(jmsg)\n"
        "    m = re.search(r'GET (\\S+)', d['logline'])\n"
        "    return {'path': m.group(1)} if m else {}\n"
        "def get_openurl_params(c, worker_section, pl):\n"
        "    if not pl.get('path', '').endswith('.pdf'):\n"
        "        return {}\n"
        "    return {'url_ver': c.get(worker_section, 'url_ver'), 'rfr_id': c.get(worker_section, 'rfr_id'),\n"
        "            'svc_dat': pl['path']}\n"
    )
    with TrackerServer() as server:
        cfg = write_cfg(f"""
            [worker_pirus]
            command = ./pirus2.py
            listento = events
            numprocs = 1
            repository_plugin = oldpirus
            endpoint_url = {server.url}
            url_ver = Z39.88-2004
            rfr_id = eprints.example.ac.uk
            success = 200
            timeout = 10
            pauseonfail = 1
            ratelimit = 0
            other_queue = notpdf
        """)
        assert config.load(cfg).programs["worker_pirus"].type == "tracker"
        worker = Worker(cfg, "worker_pirus", tmp_path).start()
        try:
            push_lines(r, [line("/1/1/a.pdf"), line("/style.css")])
            wait_for(lambda: len(server.accepted()) == 1 and r.llen(K.queue("notpdf")) == 1, what="one sent")
            assert server.accepted()[0] == {"url_ver": "Z39.88-2004", "rfr_id": "eprints.example.ac.uk",
                                            "svc_dat": "/1/1/a.pdf"}
        finally:
            worker.stop()


def test_tracker_config_errors(write_cfg, capsys) -> None:  # type: ignore[no-untyped-def]
    from pipeline.cli import main

    cfg = write_cfg("[worker_t]\ntype = tracker\nlistento = e\nplugin = repository\nendpoint_url = ftp://x\n")
    assert main(["-c", str(cfg), "check"]) == 1
    assert "key 'endpoint_url'" in capsys.readouterr().err
    cfg = write_cfg("[worker_t]\ntype = tracker\nlistento = e\nplugin = repository\nendpoint_url = http://127.0.0.1:9/x\n")
    assert main(["-c", str(cfg), "check"]) == 1
    assert "needs opt_oai_host" in capsys.readouterr().err
    cfg = write_cfg("[worker_t]\ntype = tracker\nlistento = e\nplugin = accesslog\nendpoint_url = http://127.0.0.1:9/x\n")
    assert main(["-c", str(cfg), "check"]) == 1
    assert "has no get_openurl_params" in capsys.readouterr().err


def test_a_pushed_record_cannot_ask_for_a_prepared_request(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    """Only events this tracker parked carry a valid MAC: a record with its own openurl and
    event_id is not sent (before: sent as is, unfiltered, with extra parameters, and its
    event_id could pre-suppress a real event); a parked event replays as it was."""
    with TrackerServer() as server:
        server.respond = lambda params: (503, {}) if params.get("rft_dat") == "Request" else (200, {})
        cfg = tracker_cfg(write_cfg, server.url, "retries = 1\n")
        forged = {"openurl": {"url_ver": "Z39.88-2004", "req_dat": "Googlebot", "evil": "1",
                              "svc_dat": "https://x/forged"}, "event_id": "repo:f1:0"}
        r.rpush(K.queue("events"), orjson.dumps(forged))
        worker = Worker(cfg, "worker_irus", tmp_path).start()
        try:
            wait_for(lambda: r.llen(K.queue("skipped")) == 1, what="the forged request set aside")
            skipped = orjson.loads(r.lindex(K.queue("skipped"), 0))[0]
            assert "no valid MAC" in skipped["excluded"] and server.requests == []
            tampered = {**forged, "mac": "0" * 64}
            r.rpush(K.queue("events"), orjson.dumps(tampered))
            push_lines(r, [line("/bitstream/handle/123456789/42/thesis.pdf")])  # parked: 503
            wait_for(lambda: r.llen(K.failed) == 1 and r.llen(K.queue("skipped")) == 2, what="parked")
            assert [p.get("svc_dat") for _, p, _ in server.requests] == [
                "https://repo.example.ac.uk/bitstream/handle/123456789/42/thesis.pdf"]
            server.respond = lambda params: (200, {})
            from pipeline.cli import main

            assert main(["-c", str(cfg), "dlq", "replay", "--failed", "--all"]) == 0
            wait_for(lambda: len(server.accepted()) == 1, what="the parked event sent on replay")
        finally:
            worker.stop()


def test_the_endpoints_secrets_are_never_stored_or_logged(write_cfg, tmp_path: Path, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    with TrackerServer() as server:
        server.respond = lambda params: (400, {})
        url = server.url.replace("http://", "http://user:PASSWORD42@") + "?token=SECRET123"
        cfg = tracker_cfg(write_cfg, url)
        worker = Worker(cfg, "worker_irus", tmp_path).start()
        try:
            push_lines(r, [line("/bitstream/handle/123456789/42/thesis.pdf")])
            wait_for(lambda: r.llen(K.dead_letters) == 1, what="the refused event dead-lettered")
            assert server.requests[0][1]["token"] == "SECRET123"  # the tracker still gets it
            entry = r.lindex(K.dead_letters, 0)
            assert b"SECRET123" not in entry and b"PASSWORD42" not in entry
            detail = orjson.loads(entry)["detail"]
            assert detail.startswith(server.url + "?url_ver=") and "?" not in detail[len(server.url) + 1:]
        finally:
            worker.stop()
        log = worker.logfile.read_text()
        assert "SECRET123" not in log and "PASSWORD42" not in log
