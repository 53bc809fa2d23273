"""The fault-injection harness: a whole pipeline of real processes, and the oracle that counts.

Every scenario writes sequence-numbered lines to a watched log. The pipeline fans them out to
three sinks: a file (watcher -> broker -> parser -> file logger), Elasticsearch (-> indexer)
and the tracker (-> tracker forwarder -> a local HTTP server). At the end the oracle counts,
per sink, the lines lost (written, never delivered), duplicated (delivered more than once) and
unexpected (delivered, never written). Each result is kept for the summary table printed at
the end of the run.
"""

from __future__ import annotations

import os
import re
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import ApiError, Elasticsearch
from elasticsearch.helpers import scan

from pipeline.core.keys import Keys
from tests.support.procs import SEQ, Worker, count_seq, oracle
from tests.support.servers import wait_for
from tests.support.tracker_server import TrackerServer

K = Keys()
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


@dataclass(frozen=True)
class Row:
    scenario: str
    sink: str
    lost: int
    duplicated: int
    unexpected: int
    seconds: float
    note: str = ""


ROWS: list[Row] = []
TEST_STARTED = [time.monotonic()]  # set when each test starts: scenarios time the whole test


def summary() -> list[str]:
    """The table printed at the end of the run."""
    head = f"{'scenario':<52} {'sink':<8} {'lost':>5} {'dup':>5} {'unexp':>5} {'seconds':>8}  note"
    out = [head, "-" * len(head)]
    for row in sorted(ROWS, key=lambda r: (int(re.match(r"\d*", r.scenario).group() or 0), r.scenario)):
        out.append(f"{row.scenario[:52]:<52} {row.sink:<8} {row.lost:>5} {row.duplicated:>5} "
                   f"{row.unexpected:>5} {row.seconds:>8.1f}  {row.note}")
    return out


class Scenario:
    def __init__(self, title: str) -> None:
        self.title, self.started = title, TEST_STARTED[0]

    def record(self, sink: str, seen: dict[int, int], written: int, note: str = "") -> dict[str, int]:
        result = oracle(seen, written)
        ROWS.append(Row(self.title, sink, result["lost"], result["duplicated"], result["unexpected"],
                        time.monotonic() - self.started, note))
        return result

    def check(self, sink: str, seen: dict[int, int], written: int, dup_bound: int = 0,
              note: str = "") -> None:
        """lost = 0, unexpected = 0, and no more duplicates than the sink's documented bound."""
        result = self.record(sink, seen, written, note)
        assert result["lost"] == 0 and result["unexpected"] == 0, f"{self.title} / {sink}: {result}"
        assert result["duplicated"] <= dup_bound, f"{self.title} / {sink}: {result} (bound {dup_bound})"


def access_line(n: int) -> str:
    """A human download of a distinct item: counted by every sink, the tracker included."""
    return (f'192.0.2.{n % 250 + 1} - - [10/Oct/2024:13:55:36 +0200] '
            f'"GET /bitstream/handle/123456789/{n}/f.pdf?seq={n} HTTP/1.1" 200 1234 "-" "{UA}"')


WORKERS = ("logger_access", "worker_fan", "worker_parse", "logger_out", "worker_es", "worker_irus")
SINKS = ("file", "es", "tracker")


class Pipeline:
    """watcher -> broker -> {parser -> {file logger, indexer}, tracker forwarder}."""

    def __init__(self, tmp: Path, redis_url: str, es_url: str, tracker: TrackerServer,
                 sinks: tuple[str, ...] = SINKS, out_dir: Path | None = None,
                 plugin: str = "accesslog", parse_extra: str = "", logfile: str = "",
                 redis_extra: str = "", prefix: str = "loglines") -> None:
        self.tmp, self.sinks, self.tracker = tmp, sinks, tracker
        self.log, self.out = tmp / "access.log", (out_dir or tmp) / "out.log"
        self.index = f"faults-{uuid.uuid4().hex[:8]}"
        self.es = Elasticsearch([h.strip() for h in es_url.split(",")], request_timeout=60)
        from pipeline.config import RedisConfig
        from pipeline.core.connection import connect

        self.keys = Keys(prefix)
        self.client = connect(RedisConfig(url=redis_url, embedded=False, prefix=prefix, socket_timeout=10))
        self.es_hosts = [h.strip() for h in es_url.split(",")]
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        fan = ["to_parse"] + (["to_irus"] if "tracker" in sinks else [])
        parsed = (["to_file"] if "file" in sinks else []) + (["to_es"] if "es" in sinks else [])
        body = f"""
            [supervisor]
            password = test-password

            [redis]
            url = {redis_url}
            heartbeat_ttl = 3
            socket_timeout = 2
            block_timeout = 0.5
            prefix = {prefix}
            {redis_extra.strip().replace(chr(10), chr(10) + " " * 12)}

            [logger_access]
            type = watcher
            logfile = {logfile or self.log}
            pushto = raw
            batch_lines = 100
            batch_ms = 100

            [worker_fan]
            type = broker
            listento = raw
            fanout = {",".join(fan)}

            [worker_parse]
            type = parser
            listento = to_parse
            pushto = {",".join(parsed)}
            plugin = {plugin}
            {parse_extra}

            [logger_out]
            type = filelogger
            listento = to_file
            logfile = {self.out}
            format = raw

            [worker_es]
            type = esindexer
            listento = to_es
            hosts = {es_url}
            index = {self.index}
            batch_docs = 500
            max_backoff = 2

            [worker_irus]
            type = tracker
            listento = to_irus
            repository_plugin = repository
            endpoint_url = {tracker.url}
            pauseonfail = 0.2
            max_backoff = 2
            opt_oai_host = repo.example.ac.uk
            opt_base_url = https://repo.example.ac.uk
        """
        self.cfg = tmp / "loglines.cfg"
        self.cfg.write_text(textwrap.dedent(body))
        wanted = {"logger_access", "worker_fan", "worker_parse"} | {
            {"file": "logger_out", "es": "worker_es", "tracker": "worker_irus"}[s] for s in sinks}
        self.workers = {name: Worker(self.cfg, name, self.logs) for name in WORKERS if name in wanted}
        self.written = 0

    def start(self, env: dict[str, dict[str, str]] | None = None, ready: bool = True) -> Pipeline:
        """Start every worker; with ``ready``, return once all are at work."""
        self.log.touch()
        for name, worker in self.workers.items():
            start_with(worker, (env or {}).get(name, {}))
        if ready:
            watcher = self.workers["logger_access"]
            wait_for(lambda: self.client.hlen(self.keys.consumers) >= len(self.workers) - 1
                     and watcher.logfile.exists() and b"tailing" in watcher.logfile.read_bytes(),
                     timeout=60, what="every worker at work")
        return self

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.es.options(ignore_status=404).indices.delete(index=self.index)
        self.es.close()

    def write(self, count: int, pace: float = 0.0, chunk: int = 100) -> None:
        """Append ``count`` more lines, ``chunk`` at a time, ``pace`` seconds apart."""
        with self.log.open("a") as handle:
            for start in range(self.written, self.written + count, chunk):
                end = min(start + chunk, self.written + count)
                handle.write("".join(access_line(n) + "\n" for n in range(start, end)))
                handle.flush()
                if pace:
                    time.sleep(pace)
        self.written += count

    # -- what each sink holds -------------------------------------------------------------

    def seen(self, sink: str) -> dict[int, int]:
        if sink == "file":
            return count_seq(self.out)[0]
        if sink == "es":
            return es_seen(self.es, self.index)
        return dict(Counter(int(m.group(1)) for p in self.tracker.accepted()
                            if (m := SEQ.search(p.get("svc_dat", "")))))

    def wait_delivered(self, timeout: float = 180) -> None:
        for sink in self.sinks:
            wait_for(lambda s=sink: len(self.seen(s)) >= self.written, timeout=timeout, interval=0.5,
                     what=f"{self.written} lines in the {sink} sink ({len(self.seen(sink))} so far)")
        time.sleep(1.5)  # anything doubled or late shows up now

    def dead_letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(e) for e in self.client.lrange(self.keys.dead_letters, 0, -1)]

    def dead_seqs(self) -> dict[int, int]:
        """Sequence numbers of the lines in the dead-letter list (accounted for, not lost)."""
        found: Counter[int] = Counter()
        for entry in self.dead_letters():
            found.update(int(n) for n in SEQ.findall(orjson.dumps(entry.get("item")).decode()))
        return dict(found)

    def check(self, scenario: Scenario, tracker_bound: int = 0, note: str = "",
              dead: frozenset[int] = frozenset()) -> None:
        """The oracle on every sink; the lines in ``dead`` are owed to the dead-letter list
        (with their reason) instead of the sinks, and nothing else may be there."""
        assert self.dead_seqs() == dict.fromkeys(dead, 1), self.dead_letters()[:3]
        for sink in self.sinks:
            seen = dict(self.seen(sink))
            for n in dead:
                seen[n] = seen.get(n, 0) + 1
            scenario.check(sink, seen, self.written,
                           dup_bound=tracker_bound if sink == "tracker" else 0,
                           note=note or (f"{len(dead)} dead-lettered with reason" if dead else ""))


def start_with(worker: Worker, env: dict[str, str]) -> None:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        worker.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def es_seen(es: Elasticsearch, index: str, field: str = "") -> dict[int, int]:
    """Documents per sequence number: the ``seq=N`` in their url, or the number in ``field``."""
    try:
        es.indices.refresh(index=index, ignore_unavailable=True)
        hits: Iterator[dict] = scan(es, index=index, query={"query": {"match_all": {}}},
                                    _source=[field or "url"], size=5000)
        if field:
            return dict(Counter(int(h["_source"][field]) for h in hits))
        return dict(Counter(int(m.group(1)) for h in hits if (m := SEQ.search(h["_source"]["url"]))))
    except ApiError as exc:
        if exc.meta.status in (404, 503):
            return {}
        raise


def alive(pipe: Pipeline) -> None:
    """Every worker of the pipeline is still running."""
    for name, worker in pipe.workers.items():
        assert worker.proc is not None and worker.proc.poll() is None, f"{name} exited"
