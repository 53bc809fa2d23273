"""HTTP ingest against a real worker process, over real sockets, with a real Redis."""

from __future__ import annotations

import gzip
import http.client
import signal
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from pipeline.core import message
from pipeline.core.keys import Keys
from tests.support.procs import Worker
from tests.support.servers import free_port, wait_for

K = Keys()
TOKEN = "app-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Ingest:
    def __init__(self, tmp: Path, redis_url: str, extra: str = "", processes: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "tokens").write_text(f"# who may send\napp:{TOKEN}\nother:another-token-0123456789\n")
        self.cfg = tmp / "loglines.cfg"
        self.cfg.write_text(textwrap.dedent(f"""
            [redis]
            url = {redis_url}
            heartbeat_ttl = 3
            [worker_ingest]
            type = http
            pushto = events
            tokens_file = tokens
            listen = 127.0.0.1:{self.port}
            numprocs = {processes}
        """) + textwrap.dedent(extra))
        logs = tmp / "logs"
        logs.mkdir(exist_ok=True)
        names = [f"worker_ingest_{n:02d}" for n in range(processes)] if processes > 1 else [""]
        self.workers = [Worker(self.cfg, "worker_ingest", logs, process_name=name) for name in names]

    def start(self) -> Ingest:
        for worker in self.workers:
            worker.start()
        wait_for(lambda: self.answers(), timeout=30, what="the ingest worker listening")
        return self

    def answers(self) -> bool:
        try:
            return requests.get(self.url + "/healthz", headers=AUTH, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def post(self, body: bytes | str, kind: str = "application/json", path: str = "/v1/events",
             headers: dict[str, str] | None = None, auth: bool = True) -> requests.Response:
        sent = {"Content-Type": kind, **(AUTH if auth else {}), **(headers or {})}
        return requests.post(self.url + path, data=body, headers=sent, timeout=30)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def queued(r: redis.Redis) -> list[dict]:
    return [i for raw in r.lrange(K.queue("events"), 0, -1) for i in message.decode(raw, 1 << 26)]


@pytest.fixture
def ingest(tmp_path: Path, redis_server, r: redis.Redis) -> Iterator[Ingest]:  # type: ignore[no-untyped-def]
    server = Ingest(tmp_path, redis_server.url, "high_water = 50\nmax_body_bytes = 1m\nmax_events = 100\n"
                                                "request_timeout = 2\n").start()
    yield server
    server.stop()


def test_every_body_form_is_taken_and_each_event_gets_time_token_and_id(ingest: Ingest, r: redis.Redis) -> None:
    assert ingest.post(b'{"a": 1}').status_code == 202
    reply = ingest.post(b'[{"a": 2}, {"a": 3, "@timestamp": "2026-01-01T00:00:00Z"}]')
    assert reply.status_code == 202 and reply.json() == {"accepted": 2}
    ndjson = b'{"a": 4}\n\n{"a": 5}\n'
    assert ingest.post(ndjson, "application/x-ndjson").json() == {"accepted": 2}
    zipped = gzip.compress(b'{"a": 6}\n{"a": 7}\n')
    assert ingest.post(zipped, "application/x-ndjson", headers={"Content-Encoding": "gzip"}).status_code == 202
    legacy = ingest.post(b'{"a": 8}', "application/x-www-form-urlencoded", path="/logger/insert")
    assert legacy.status_code == 200 and legacy.text == "True"  # what the crowdsourcing logger answered
    events = queued(r)
    assert [e["a"] for e in events] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(e["token_name"] == "app" and e["service"] == "ingest" and len(e["event_id"]) == 40 for e in events)
    assert events[2]["@timestamp"] == "2026-01-01T00:00:00Z" and events[0]["@timestamp"].endswith("Z")
    assert len({e["event_id"] for e in events}) == 8


def test_every_status(ingest: Ingest, r: redis.Redis) -> None:
    assert ingest.post(b'{"a": 1}', auth=False).status_code == 401
    wrong = ingest.post(b'{"a": 1}', headers={"Authorization": "Bearer wrong-token-0123456789"}, auth=False)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(ingest.url + "/healthz", timeout=5).status_code == 401  # nothing answers unasked
    assert requests.get(ingest.url + "/v1/events", headers=AUTH, timeout=5).status_code == 405
    assert requests.get(ingest.url + "/nowhere", headers=AUTH, timeout=5).status_code == 404
    assert requests.get(ingest.url + "/nowhere", timeout=5).status_code == 401  # not even a 404 unasked
    assert ingest.post(b"<a/>", "application/xml").status_code == 415
    assert ingest.post(b'"text"').status_code == 400
    assert ingest.post(b"x" * (1024 * 1024 + 1)).status_code == 413
    too_many = b"".join(b'{"n": %d}\n' % n for n in range(101))
    assert ingest.post(too_many, "application/x-ndjson").status_code == 413
    nested = b'{"deep": ' + b"[" * 300 + b"]" * 300 + b"}"
    assert ingest.post(nested).status_code == 400
    assert queued(r) == []  # none of that enqueued anything


def test_a_bad_line_in_the_middle_enqueues_nothing_and_is_named(ingest: Ingest, r: redis.Redis) -> None:
    body = b'{"n": 1}\n{"n": 2}\n{"n": \n{"n": 4}\n'
    reply = ingest.post(body, "application/x-ndjson")
    assert reply.status_code == 400 and reply.json()["error"].startswith("line 3 is not JSON")
    reply = ingest.post(b'[{"n": 1}, 2, {"n": 3}]')
    assert reply.status_code == 400 and "element 2 is a int" in reply.json()["error"]
    assert queued(r) == []


def test_a_zip_bomb_is_refused_on_its_decompressed_size(ingest: Ingest, r: redis.Redis) -> None:
    bomb = gzip.compress(b'{"a": "' + b"0" * (50 * 1024 * 1024) + b'"}')
    assert len(bomb) < 100_000
    reply = ingest.post(bomb, headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 413 and "decompress" in reply.json()["error"]
    assert ingest.post(b"not gzip", headers={"Content-Encoding": "gzip"}).status_code == 400
    assert queued(r) == []


def test_a_body_of_several_gzip_members_is_read_whole(ingest: Ingest, r: redis.Redis) -> None:
    """gzip allows members one after another (what ``cat a.gz b.gz`` makes): every member is
    read, none silently left out; bytes after a member that are not one are a 400."""
    two = gzip.compress(b'{"n": 1}\n{"n": 2}\n') + gzip.compress(b'{"n": 3}\n{"n": 4}\n')
    reply = ingest.post(two, "application/x-ndjson", headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 202 and reply.json() == {"accepted": 4}
    assert [e["n"] for e in queued(r)] == [1, 2, 3, 4]
    garbage = ingest.post(gzip.compress(b'{"n": 5}\n') + b"trailing garbage", "application/x-ndjson",
                          headers={"Content-Encoding": "gzip"})
    assert garbage.status_code == 400 and "gzip" in garbage.json()["error"]
    member = gzip.compress(b'{"a": "' + b"0" * (300 * 1024) + b'"}\n')  # 4 of them: over max_body_bytes
    bomb = ingest.post(member * 4, "application/x-ndjson", headers={"Content-Encoding": "gzip"})
    assert bomb.status_code == 413 and "decompress" in bomb.json()["error"]
    assert len(queued(r)) == 4


def test_an_event_too_big_for_any_worker_once_encoded_is_refused(tmp_path: Path, redis_server,  # type: ignore[no-untyped-def]
                                                                  r: redis.Redis) -> None:
    """Numbers can grow when encoded again (``1e15`` is ``1000000000000000.0``): an event that
    would make a message over ``max_payload_bytes`` is a 413, not a 202 and then a dead letter."""
    server = Ingest(tmp_path, redis_server.url, "max_body_bytes = 1m\n")
    server.cfg.write_text(server.cfg.read_text().replace("heartbeat_ttl = 3\n", "heartbeat_ttl = 3\n"
                                                         "max_payload_bytes = 1088k\nmessage_bytes = 256k\n"))
    server.start()
    try:
        body = b'[{"n": 1}, {"a": [' + b",".join([b"1e15"] * 190_000) + b"]}]"
        assert len(body) < 1024 * 1024
        reply = server.post(body)
        assert reply.status_code == 413 and reply.json()["error"].startswith("event 2 takes more than max_payload")
        assert queued(r) == [] and server.post(b'{"n": 1}').status_code == 202
    finally:
        server.stop()


def test_events_alike_are_kept_apart_unless_something_of_their_own_says_they_are_one(
        ingest: Ingest, r: redis.Redis) -> None:
    """The event id is the document id: two clicks alike (no time, no id, no key) are two
    events, in one request or in two; an event with its own time, or its own id, sent again is
    the same event."""
    assert ingest.post(b'[{"action": "click"}, {"action": "click"}]').status_code == 202
    for _ in range(2):
        assert ingest.post(b'{"worker_id": "w-17", "event": "submit"}', path="/logger/insert").status_code == 200
        assert ingest.post(b'{"id": null, "event": "view"}').status_code == 202
    for _ in range(2):
        assert ingest.post(b'{"event": "view", "@timestamp": "2026-01-01T00:00:00Z"}').status_code == 202
        assert ingest.post(b'{"event": "view", "id": "v-1"}').status_code == 202
    ids = [e["event_id"] for e in queued(r)]
    assert len(ids) == 10 and len(set(ids[:6])) == 6
    assert ids[6] == ids[8] and ids[7] == ids[9] and len(set(ids)) == 8


def test_a_retried_request_is_answered_as_the_first_and_stored_once(ingest: Ingest, r: redis.Redis) -> None:
    body = b'[{"a": 1}, {"a": 2}]'
    first = ingest.post(body, headers={"Idempotency-Key": "batch-7"})
    again = ingest.post(body, headers={"Idempotency-Key": "batch-7"})
    assert first.status_code == again.status_code == 202 and first.json() == again.json() == {"accepted": 2}
    assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
    events = queued(r)
    assert [e["a"] for e in events] == [1, 2]
    other = ingest.post(body, headers={"Idempotency-Key": "batch-8"})
    assert other.status_code == 202 and len(queued(r)) == 4
    # the same key from another token is another request
    theirs = ingest.post(body, headers={"Idempotency-Key": "batch-7",
                                        "Authorization": "Bearer another-token-0123456789"}, auth=False)
    assert theirs.status_code == 202 and len(queued(r)) == 6
    # ids: from the key and the position; a replayed batch would get the same ones
    ids = [e["event_id"] for e in queued(r)]
    assert len(set(ids)) == 6


def test_over_high_water_the_answer_is_503_until_under_low_water(ingest: Ingest, r: redis.Redis) -> None:
    r.rpush(K.queue("events"), *[b"[]"] * 50)
    wait_for(lambda: ingest.post(b'{"a": 1}').status_code == 503, what="back-pressure")
    refused = ingest.post(b'{"a": 1}')
    assert refused.headers["Retry-After"] and "high-water" in refused.json()["error"]
    assert requests.get(ingest.url + "/readyz", headers=AUTH, timeout=5).status_code == 503
    r.ltrim(K.queue("events"), 0, 44)  # 45: under high water, not under low water (40)
    time.sleep(0.6)
    assert ingest.post(b'{"a": 1}').status_code == 503
    r.ltrim(K.queue("events"), 0, 29)
    wait_for(lambda: ingest.post(b'{"a": 1}').status_code == 202, what="taken again")


def test_a_slow_client_is_timed_out(ingest: Ingest) -> None:
    with socket.create_connection(("127.0.0.1", ingest.port)) as sock:
        sock.sendall(f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
        sock.settimeout(10)
        started = time.monotonic()
        head = sock.recv(200)
        assert head.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5


def answer_of(sock: socket.socket) -> bytes:
    """What the server sends before it closes the connection (b"" when it closes without a word)."""
    sock.settimeout(10)
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def test_idle_connections_are_closed_before_they_can_take_every_slot(tmp_path: Path, redis_server) -> None:  # type: ignore[no-untyped-def]
    """Connections that send nothing, or a request line and then nothing, are answered 408 and
    closed once ``request_timeout`` is over, before any token is asked for: they cannot hold
    the ``max_connections`` slots against everyone else."""
    server = Ingest(tmp_path, redis_server.url, "max_connections = 10\nrequest_timeout = 1.5\n").start()
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
    try:
        for n, sock in enumerate(socks):
            if n % 2:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answers = [answer_of(sock) for sock in socks]
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        assert time.monotonic() - started < 5
        assert server.post(b'{"n": 1}').status_code == 202
        kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)  # kept alive, then idle mid-request
        kept.request("GET", "/healthz", headers=AUTH)
        first = kept.getresponse()
        assert first.status == 200 and first.read()
        assert kept.sock is not None
        kept.sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert answer_of(kept.sock).startswith(b"HTTP/1.1 408")
        kept.close()
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def test_an_endless_url_or_header_is_refused_before_it_costs_memory(ingest: Ingest) -> None:
    cases = [(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n", b"414"),
             (b"GET / HTTP/1.1\r\nX-A: " + b"a" * 100_000 + b"\r\n", b"431"),
             (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(200)), b"431")]
    for head, status in cases:
        with socket.create_connection(("127.0.0.1", ingest.port)) as sock:
            try:
                sock.sendall(head + b"X-More: " + b"b" * 1_000_000)  # and it would go on
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused already
            got = answer_of(sock)
            assert got.startswith(b"HTTP/1.1 " + status), got[:200]
    assert ingest.answers()


def test_redis_down_means_503_and_healthz_says_so(tmp_path: Path) -> None:
    from tests.support.servers import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    ingest = Ingest(tmp_path, server.url).start()
    try:
        assert ingest.post(b'{"a": 1}').status_code == 202
        server.kill()
        wait_for(lambda: requests.get(ingest.url + "/healthz", headers=AUTH, timeout=5).status_code == 503,
                 what="healthz saying Redis is gone")
        reply = ingest.post(b'{"a": 2}')
        assert reply.status_code == 503 and reply.headers["Retry-After"]
        server.start()
        wait_for(lambda: ingest.post(b'{"a": 3}').status_code == 202, what="taken again")
        assert [e["a"] for e in queued(server.client())] == [1, 3]
    finally:
        ingest.stop()
        server.kill()


def test_many_connections_cannot_take_the_memory_past_its_bound(tmp_path: Path, redis_server) -> None:  # type: ignore[no-untyped-def]
    """600 clients each start a 1 MiB body and stall: the worker reads at most
    max_pending_bytes of bodies at once (others wait, then get 503/408), and its memory stays
    near max_pending_bytes plus a little per connection."""
    ingest = Ingest(tmp_path, redis_server.url, "max_pending_bytes = 8m\nrequest_timeout = 3\n"
                                                "max_connections = 2000\n").start()
    socks = []
    try:
        pid = ingest.workers[0].proc.pid  # type: ignore[union-attr]
        rss_before = _rss(pid)
        head = (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n").encode()
        for _ in range(600):
            sock = socket.create_connection(("127.0.0.1", ingest.port))
            sock.sendall(head + b"[" + b" " * 200_000)
            socks.append(sock)
        time.sleep(1)
        grown = _rss(pid) - rss_before
        assert grown < 120 * 1024 * 1024, f"grew {grown >> 20} MiB"
    finally:
        for sock in socks:
            sock.close()
        ingest.stop()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_processes_share_the_port_and_one_idempotency_key(tmp_path: Path, redis_server, r) -> None:  # type: ignore[no-untyped-def]
    ingest = Ingest(tmp_path, redis_server.url, processes=2).start()
    try:
        wait_for(lambda: len(r.keys("{loglines}:hb:*/http")) == 2, what="both processes probing")
        replies = [ingest.post(b'{"a": 1}', headers={"Idempotency-Key": "same"}) for _ in range(20)]
        assert all(x.status_code == 202 for x in replies)
        assert len(queued(r)) == 1
    finally:
        ingest.stop()


def test_sigterm_finishes_what_it_took(tmp_path: Path, redis_server, r) -> None:  # type: ignore[no-untyped-def]
    ingest = Ingest(tmp_path, redis_server.url).start()
    assert ingest.post(b'{"a": 1}').status_code == 202
    proc = ingest.workers[0].proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert [e["a"] for e in queued(r)] == [1]


def test_tls(tmp_path: Path, redis_server, r) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    ingest = Ingest(tmp_path, redis_server.url, f"tls_cert = {cert}\ntls_key = {key}\n")
    ingest.url = ingest.url.replace("http://", "https://")
    for worker in ingest.workers:
        worker.start()
    try:
        wait_for(lambda: _tls_answers(ingest.url, cert), timeout=30, what="the TLS listener")
        reply = requests.post(ingest.url + "/v1/events", data=b'{"a": 1}', verify=str(cert),
                              headers={"Content-Type": "application/json", **AUTH}, timeout=10)
        assert reply.status_code == 202 and [e["a"] for e in queued(r)] == [1]
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(ingest.url + "/healthz", headers=AUTH, timeout=5)  # not a trusted certificate
    finally:
        ingest.stop()


def _tls_answers(url: str, cert: Path) -> bool:
    try:
        return requests.get(url + "/healthz", headers=AUTH, verify=str(cert), timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
