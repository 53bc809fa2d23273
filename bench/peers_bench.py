"""loglines side by side with rsyslog on the same machine, the same file, Redis and node
(P1 and P2, into Redis, are bench/redis_peers_bench.py).

P4  file -> searchable in Elasticsearch: watcher -> parser -> indexer (three processes) vs
    rsyslog imfile -> omelasticsearch (bulk mode). Ours parses every line into fields; the
    peer sends the raw line. The CPU seconds of every process, and of the node, per 100,000
    lines (/proc/<pid>/stat before and after).
P5  latency at a steady write rate both systems sustain (half the slower one's P4 rate): time
    from a line's write to its document being searchable (the node's default 1 s refresh),
    p50 and p99, for both (bench/latency.py), after each system has done that work unmeasured
    for WARM_P5_S seconds (a node that has not served the poller's searches yet is slow for
    its first ~40 s of them: whoever went first paid for it).
P6  peak RSS (VmHWM) of every process while a backlog drains, and of the indexer while
    Elasticsearch is unreachable.

P4 and P5 start each system on an empty file and wait until its processes are idle (started,
imports done, connected) before the data is appended or written: the figures and the CPU
seconds are the work, not the start. Each figure is the median of ``--runs`` runs, ours and
the peer's interleaved. Output lines are ``label: figure`` and ``ROW|...`` for bench/run.py.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from bench import latency
from bench.common import (
    access_log,
    append,
    cpu_seconds,
    cpu_text,
    elasticsearch,
    med,
    medians,
    per_100k,
    private_redis,
    row,
    settle,
)
from bench.rsyslog import Rsyslog, wait_until


def peak_rss_mib(pid: int) -> float:
    for entry in Path(f"/proc/{pid}/status").read_text().splitlines():
        if entry.startswith("VmHWM:"):
            return int(entry.split()[1]) / 1024
    return 0.0


def current_rss_mib(pid: int) -> float:
    for entry in Path(f"/proc/{pid}/status").read_text().splitlines():
        if entry.startswith("VmRSS:"):
            return int(entry.split()[1]) / 1024
    return 0.0


ES_PID: list[int] = []  # the node's process, when the benchmark started it: its CPU is counted too


# -- P4, P5, P6: to Elasticsearch -------------------------------------------------------------


#: Raw-line documents, as both sides of the same-work comparison index them.
RAW_MAPPING = {"service": {"type": "keyword"}, "logline": {"type": "text"}, "@timestamp": {"type": "date"}}


class Ours:
    """watcher -> parser -> indexer as three worker processes, on a private Redis."""

    name = "loglines"
    key_field = "off"  # what finds a line's document in P5: its offset in the file

    parse = True
    processes = int(os.environ.get("BENCH_PROCESSES", "1"))  # per consuming worker, as numprocs
    bulks = int(os.environ.get("BENCH_BULKS", "2"))  # the indexer's bulks_in_flight

    def __init__(self, log: Path, es_url: str, index: str, es_hosts: str = "") -> None:
        from tests.support.procs import Worker

        self.work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
        self.redis = private_redis(self.work / "redis")
        cfg = self.work / "loglines.cfg"
        parser = ("[worker_p]\ntype = parser\nlistento = raw\npushto = parsed\nplugin = accesslog\n"
                  if self.parse else "")
        cfg.write_text(f"[redis]\nurl = {self.redis.url}\n"
                       f"[logger_w]\ntype = watcher\nlogfile = {log}\n"
                       f"pushto = {'raw' if self.parse else 'parsed'}\n{parser}"
                       f"[worker_e]\ntype = esindexer\nlistento = parsed\nhosts = {es_hosts or es_url}\n"
                       f"index = {index}\ntemplate = {'access' if self.parse else 'none'}\n"
                       f"bulks_in_flight = {self.bulks}\n")
        self.cfg, self.setup = cfg, not es_hosts  # no setup when pointed at nothing (P6)
        self.es_url, self.index = es_hosts or es_url, index
        names = ("logger_w", "worker_p", "worker_e") if self.parse else ("logger_w", "worker_e")
        self.workers = [Worker(cfg, name, self.work) for name in names]
        self.workers += [Worker(cfg, name, self.work, f"{name}_{n:02d}")  # numprocs > 1
                         for name in names[1:] for n in range(1, self.processes)]

    def __enter__(self) -> Ours:
        import subprocess
        import sys

        from tests.support.procs import REPO

        if self.setup:  # as documented: the index template first
            done = subprocess.run([sys.executable, "-m", "pipeline", "-c", str(self.cfg), "es", "setup"],
                                  capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            if done.returncode != 0:
                raise SystemExit(f"loglines es setup failed: {done.stderr}")
            with Elasticsearch(self.es_url, request_timeout=60) as es:  # as the peer's is, before the start
                es.options(ignore_status=400).indices.create(index=self.index)
        for worker in self.workers:
            worker.start()
        return self

    def pids(self) -> dict[str, int]:
        return {w.process_name or w.name: w.proc.pid for w in self.workers if w.proc is not None}

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()
        self.redis.stop()
        shutil.rmtree(self.work, ignore_errors=True)


class OursRaw(Ours):
    """The same work as the peer: raw lines, watcher -> indexer, no parsing, and the line
    indexed as text as the peer's is (the access template would keep it in _source only)."""

    name = "loglines-raw"
    parse = False

    def __enter__(self) -> OursRaw:
        with Elasticsearch(self.es_url, request_timeout=60) as es:
            es.options(ignore_status=400).indices.create(index=self.index, mappings={"properties": {
                **RAW_MAPPING, "src": {"type": "keyword"}, "off": {"type": "long"}}})
        super().__enter__()
        return self


class Peer:
    name = "rsyslog"
    key_field = "seq"  # P5: the line's seq=N, a field of its document (PeerSeq's template)
    seq = False

    def __init__(self, log: Path, es_url: str, index: str) -> None:
        self.rsyslog = Rsyslog.to_elasticsearch(log, es_url, index, seq=self.seq)
        self.es_url, self.index = es_url, index

    def __enter__(self) -> Peer:
        mappings = {**RAW_MAPPING, "seq": {"type": "long"}} if self.seq else RAW_MAPPING
        with Elasticsearch(self.es_url, request_timeout=60) as es:  # explicit mappings, as ours has
            es.options(ignore_status=400).indices.create(index=self.index, mappings={"properties": mappings})
        self.rsyslog.start()
        return self

    def pids(self) -> dict[str, int]:
        return {"rsyslogd": self.rsyslog.pid}

    def __exit__(self, *exc: object) -> None:
        self.rsyslog.stop()


class PeerSeq(Peer):
    """The peer for P5: each document also carries the line's number."""

    seq = True


def searchable(es: Elasticsearch, index: str) -> int:
    try:
        return int(es.count(index=index, ignore_unavailable=True)["count"])
    except Exception:  # noqa: BLE001 - an index being created answers 503 for a moment
        return 0


def fresh(es: Elasticsearch, index: str) -> None:
    es.options(ignore_status=404).indices.delete(index=index)


def throughput(make: Callable[[Path, str, str], Any], es: Elasticsearch, url: str, log: Path,
               count: int, index: str) -> tuple[float, dict[str, float], dict[str, float]]:
    """lines/s from the log's append to every document searchable; each process's peak RSS;
    each process's CPU seconds (and the node's) for that work, per 100,000 lines."""
    fresh(es, index)
    target = log.with_name(f"{index}.log")
    target.write_bytes(b"")
    with make(target, url, index) as system:
        pids = system.pids()
        watched = {**pids, **({"elasticsearch": ES_PID[0]} if ES_PID else {})}
        settle(watched.values())
        before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        started = time.perf_counter()
        append(log, target)
        wait_until(lambda: searchable(es, index) >= count, timeout=3600, interval=0.2)
        elapsed = time.perf_counter() - started
        rss = {name: peak_rss_mib(pid) for name, pid in pids.items()}
        cpu = per_100k({name: cpu_seconds(pid) - before[name] for name, pid in watched.items()}, count)
    print(f"   CPU seconds per 100,000 lines, {make.name}: {cpu_text(cpu)} "  # type: ignore[attr-defined]
          f"(wall {elapsed:.1f} s)")
    fresh(es, index)
    target.unlink()
    return count / elapsed, rss, cpu


def es_down_rss(url: str, backlog: int) -> float:
    """The indexer's peak RSS with ``backlog`` lines waiting and Elasticsearch unreachable."""
    work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    log = access_log(work / "access.log", backlog)
    from tests.support.servers import free_port

    with Ours(log, url, "p6-down", es_hosts=f"http://127.0.0.1:{free_port()}") as ours:
        samples = []
        for _ in range(30):
            time.sleep(1)
            samples.append(current_rss_mib(ours.pids()["worker_e"]))
        rss = peak_rss_mib(ours.pids()["worker_e"])
    print(f"   indexer RSS while Elasticsearch is unreachable, at 5/15/30 s: "
          f"{samples[4]:.1f} / {samples[14]:.1f} / {samples[29]:.1f} MiB")
    shutil.rmtree(work, ignore_errors=True)
    return rss


def cpu_table(cpu: dict[str, list[dict[str, float]]], runs: int) -> None:
    """P4's CPU seconds per 100,000 lines: each process, ours added up, and the node."""
    ours, raw, peer = medians(cpu["loglines"]), medians(cpu["loglines-raw"]), medians(cpu["rsyslog"])
    node = {name: m.pop("elasticsearch", float("nan")) for name, m in
            (("loglines", ours), ("loglines-raw", raw), ("rsyslog", peer))}
    total, total_raw, rsyslogd = sum(ours.values()), sum(raw.values()), sum(peer.values())
    for name, figures, node_cpu in (("loglines (parsed)", ours, node["loglines"]),
                                    ("loglines raw lines", raw, node["loglines-raw"]),
                                    ("rsyslog (raw lines)", peer, node["rsyslog"])):
        print(f"P4 CPU seconds per 100,000 lines, {name}: {cpu_text(figures)}; total "
              f"{sum(figures.values()):.2f}; Elasticsearch {node_cpu:.2f} (median of {runs})")
    print(f"P4 CPU target: ours <= 2.5 s per 100,000 parsed records: {total:.2f} "
          f"({'met' if total <= 2.5 else 'not met'})")
    roles = " / ".join(ours)
    row(f"P4 CPU-s per 100,000 lines, our processes ({roles}; median of {runs})",
        f"{total:.2f} ({' / '.join(f'{v:.2f}' for v in ours.values())}) parsed", f"{rsyslogd:.2f} raw",
        f"{total / rsyslogd:.2f}x", "<= 2.5 (ours)")
    row("P4 CPU-s per 100,000 lines, raw lines on both sides (watcher / indexer)",
        f"{total_raw:.2f} ({' / '.join(f'{v:.2f}' for v in raw.values())})", f"{rsyslogd:.2f}",
        f"{total_raw / rsyslogd:.2f}x", "")
    row("P4 CPU-s per 100,000 lines, the Elasticsearch node (parsed; raw lines)",
        f"{node['loglines']:.2f}; {node['loglines-raw']:.2f}", f"{node['rsyslog']:.2f} raw",
        f"{node['loglines'] / node['rsyslog']:.2f}x", "")


#: Seconds of P5's work each system does, unmeasured, before the runs.
WARM_P5_S = 25.0


def p5(es: Elasticsearch, url: str, rate: int, seconds: float, runs: int) -> None:
    """Latency at ``rate`` for ours and the peer, runs interleaved."""
    work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    found: dict[str, list[latency.Latency]] = {"loglines": [], "rsyslog": []}

    def measure(make: type[Ours] | type[PeerSeq], seconds: float) -> latency.Latency:
        index = f"p5-{make.name}"
        fresh(es, index)
        start = functools.partial(make, es_url=url, index=index)
        try:
            return latency.measure(start, es, index, make.key_field, work, rate, seconds)
        finally:
            fresh(es, index)

    # the node's search path (the poller's aggregations beside indexing) is slow until the JVM
    # has compiled it, for some 40 s: the first system measured paid for that (seconds of p99)
    for make in (PeerSeq, Ours):
        measure(make, WARM_P5_S)
    for run in range(runs):
        for make in (Ours, PeerSeq) if run % 2 == 0 else (PeerSeq, Ours):  # neither always first
            found[make.name].append(measure(make, seconds))
    shutil.rmtree(work, ignore_errors=True)
    figures = {}
    for name, results in found.items():
        p50, p99 = statistics.median(r.p50 for r in results), statistics.median(r.p99 for r in results)
        figures[name] = (p50, p99)
        never = sum(r.never for r in results)
        print(f"P5 latency at {rate:,} lines/s for {seconds:.0f} s, {name}: p50 {p50:.2f} s, p99 {p99:.2f} s "
              f"(median of {runs}; p99 {min(r.p99 for r in results):.2f}..{max(r.p99 for r in results):.2f}, "
              f"worst line {max(r.worst for r in results):.2f} s, written at "
              f"{statistics.median(r.rate for r in results):,.0f} lines/s"
              f"{f', {never:,} lines never searchable' if never else ''}; target p99 <= 1.5 s)")
    ours_p, peer_p = figures["loglines"], figures["rsyslog"]
    row(f"P5 write -> searchable at {rate:,} lines/s (half the slower P4), p50 / p99 (s, median of {runs})",
        f"{ours_p[0]:.2f} / {ours_p[1]:.2f}", f"{peer_p[0]:.2f} / {peer_p[1]:.2f}",
        f"{ours_p[1] / peer_p[1]:.2f}x (p99)" if peer_p[1] else "-", "p99 <= 1.5 s")


def to_elasticsearch(url: str, count: int, runs: int, rate: int, seconds: float, backlog: int,
                     what: str = "es") -> None:
    """P4 (with its CPU table), then P5 at ``rate`` (0: half the slower system's P4 rate), then P6."""
    es = Elasticsearch(url, request_timeout=120)
    work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    if what == "p5" and not rate:
        raise SystemExit("p5 alone needs --rate (half the slower system's P4 rate)")
    warm = access_log(work / "warm.log", 20_000, seed=23)
    for make in (Peer, Ours):  # a fresh node is slow at first: nobody's run should pay for that
        throughput(make, es, url, warm, 20_000, f"warm-{make.name}")
    if what == "p5":
        p5(es, url, rate, seconds, runs)
        return
    log = access_log(work / "access.log", count, seed=22)
    results: dict[str, list[float]] = {"loglines": [], "loglines-raw": [], "rsyslog": []}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in results}
    rss: dict[str, list[float]] = {}
    for _ in range(runs):
        for make in (Ours, OursRaw, Peer):
            figure, peaks, used = throughput(make, es, url, log, count, f"p4-{make.name}")
            results[make.name].append(figure)
            cpu[make.name].append(used)
            for name, value in peaks.items():
                if make is not OursRaw:
                    rss.setdefault(f"{make.name} {name}", []).append(value)
    o, p = statistics.median(results["loglines"]), statistics.median(results["rsyslog"])
    raw = statistics.median(results["loglines-raw"])
    print(f"P4 file->Elasticsearch, loglines raw lines (watcher -> indexer): {raw:,.0f} lines/s "
          f"({med(results['loglines-raw'])})")
    print(f"P4 file->Elasticsearch, loglines (parsed): {o:,.0f} lines/s ({med(results['loglines'])})")
    print(f"P4 file->Elasticsearch, rsyslog (raw lines): {p:,.0f} lines/s ({med(results['rsyslog'])})")
    print(f"P4 ratio: {o / p:.2f}x (target 1.5x)")
    row(f"P4 file -> searchable in Elasticsearch (lines/s, {count:,} lines, median of {runs})",
        f"{o:,.0f} parsed", f"{p:,.0f} raw", f"{o / p:.2f}x", ">= 1.5x")
    row("P4 the same, raw lines on both sides (watcher -> indexer, no parser)",
        f"{raw:,.0f} raw", f"{p:,.0f} raw", f"{raw / p:.2f}x", ">= 1.5x")
    cpu_table(cpu, runs)
    for name, values in rss.items():
        print(f"P6 peak RSS draining {count:,} lines, {name}: {statistics.median(values):.1f} MiB "
              f"(max of {len(values)} runs {max(values):.1f}; target 60 MiB per worker)")
    worst = max((max(v), k) for k, v in rss.items() if k.startswith("loglines"))
    peer_rss = max(max(v) for k, v in rss.items() if k.startswith("rsyslog"))
    row(f"P6 peak RSS draining {count:,} lines to Elasticsearch (MiB, largest worker)",
        f"{worst[0]:.1f} ({worst[1].split()[-1]})", f"{peer_rss:.1f}", f"{worst[0] / peer_rss:.2f}x",
        "<= 60 MiB per worker")
    if what == "p4":
        return
    p5(es, url, rate or int(min(o, p) / 2), seconds, runs)
    down = es_down_rss(url, backlog)
    print(f"P6 peak RSS of the indexer, Elasticsearch unreachable for 30 s with {backlog:,} lines "
          f"waiting: {down:.1f} MiB")
    row(f"P6 indexer peak RSS, Elasticsearch unreachable 30 s, {backlog:,} lines waiting (MiB)",
        f"{down:.1f}", target="<= 60 MiB, flat")
    shutil.rmtree(work, ignore_errors=True)
    es.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["es", "p4", "p5", "p6"], nargs="?", default="es",
                        help="es: P4, P5 and P6")
    parser.add_argument("--es-lines", type=int, default=200_000, help="P4/P6 backlog drained to Elasticsearch")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=0,
                        help="P5 lines/s (default: half the slower system's P4 rate in this run)")
    parser.add_argument("--seconds", type=float, default=20, help="P5 duration")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="P6 lines waiting while Elasticsearch is down")
    args = parser.parse_args()
    if args.what == "p6":  # only the Elasticsearch-down part: no node needed
        down = es_down_rss("http://127.0.0.1:9", args.backlog)
        row(f"P6 indexer peak RSS, Elasticsearch unreachable 30 s, {args.backlog:,} lines waiting (MiB)",
            f"{down:.1f}", target="<= 60 MiB, flat")
    if args.what in ("es", "p4", "p5"):
        with elasticsearch() as (url, pid):
            ES_PID[:] = [pid] if pid else []
            to_elasticsearch(url, args.es_lines, args.runs, args.rate, args.seconds, args.backlog,
                             what=args.what)


if __name__ == "__main__":
    main()
