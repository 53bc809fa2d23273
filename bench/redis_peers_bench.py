"""loglines side by side with its peers into Redis, on the same machine, file and Redis.

P1  file -> Redis: the watcher's code (offsets committed) vs rsyslog imfile -> omhiredis and
    syslog-ng file() -> redis(); the faster peer goes in the table.
P2  file -> parsed records in Redis: watcher -> parser (two worker processes, the accesslog
    plugin) vs syslog-ng file() -> apache-accesslog-parser() -> redis(), flow control on.
    Each system starts on an empty file and is idle before the log is appended (the figure is
    the work, not the start); every line must arrive as a parsed record (counted afterwards).

Each figure is the median of ``--runs`` runs, ours and the peers' interleaved. Output lines
are ``label: figure`` and ``ROW|...`` for bench/run.py.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    access_log,
    append,
    cpu_seconds,
    cpu_text,
    med,
    medians,
    per_100k,
    private_redis,
    push_file,
    row,
    settle,
)
from bench.rsyslog import Rsyslog, wait_until
from bench.syslogng import SyslogNg
from pipeline.core.keys import Keys
from pipeline.core.message import count_items
from pipeline.sources.fileid import FileState

KEYS = Keys()  # the default prefix, as the benchmark's configuration has it

# -- P1 ----------------------------------------------------------------------------------------


def p1(count: int, runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    log = access_log(work / "access.log", count)
    server = private_redis(work / "redis")
    client = server.client()
    ours: list[float] = []
    peers: dict[str, list[float]] = {"rsyslog": [], "syslog-ng": []}
    makers: dict[str, Callable[[Path, str, str], Rsyslog | SyslogNg]] = {
        "rsyslog": Rsyslog.to_redis, "syslog-ng": SyslogNg.to_redis}
    try:
        for _ in range(runs):
            client.flushall()
            started = time.perf_counter()
            assert push_file(client, log) == count
            ours.append(count / (time.perf_counter() - started))
            for name, make in makers.items():
                client.flushall()
                with make(log, server.url, "raw"):
                    peers[name].append(count / wait_until(lambda: client.llen("raw") >= count))
                if (held := client.llen("raw")) != count:
                    raise SystemExit(f"P1: {name} pushed {held:,} items for {count:,} lines")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    o = statistics.median(ours)
    print(f"P1 file->Redis, loglines watcher: {o:,.0f} lines/s ({med(ours)})")
    print(f"P1 file->Redis, rsyslog imfile->omhiredis: {statistics.median(peers['rsyslog']):,.0f} lines/s "
          f"({med(peers['rsyslog'])})")
    print(f"P1 file->Redis, syslog-ng file()->redis(): {statistics.median(peers['syslog-ng']):,.0f} lines/s "
          f"({med(peers['syslog-ng'])})")
    name = max(peers, key=lambda n: statistics.median(peers[n]))
    p = statistics.median(peers[name])
    print(f"P1 ratio against the faster peer ({name}): {o / p:.2f}x (target 3.0x)")
    row(f"P1 file -> Redis (lines/s, {count:,} lines, median of {runs})", f"{o:,.0f}", f"{p:,.0f} ({name})",
        f"{o / p:.2f}x", ">= 3.0x")


# -- P2 ----------------------------------------------------------------------------------------


class OursParsing:
    """watcher -> parser as two worker processes on a given Redis: parsed records in ``parsed``."""

    def __init__(self, log: Path, redis_url: str, parsers: int = 1) -> None:
        from tests.support.procs import Worker

        self.work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
        cfg = self.work / "loglines.cfg"
        cfg.write_text(f"[redis]\nurl = {redis_url}\n[logger_w]\ntype = watcher\nlogfile = {log}\n"
                       "pushto = raw\n[worker_p]\ntype = parser\nlistento = raw\npushto = parsed\n"
                       "plugin = accesslog\n")
        self.log = log
        self.workers = [Worker(cfg, "logger_w", self.work)]
        # numprocs copies of the parser, named as supervisord names them (distinct consumers)
        self.workers += ([Worker(cfg, "worker_p", self.work)] if parsers == 1 else
                         [Worker(cfg, "worker_p", self.work, f"worker_p_{n:02d}") for n in range(parsers)])

    def __enter__(self) -> OursParsing:
        for worker in self.workers:
            worker.start()
        return self

    def pids(self) -> dict[str, int]:
        return {w.process_name or w.name: w.proc.pid for w in self.workers if w.proc is not None}

    def drained(self, client: Any) -> bool:
        """Every line of the file committed, and every batch parsed and acknowledged."""
        read = sum(FileState.loads(v).offset for v in client.hvals(KEYS.offsets("logger_w")))
        if read < self.log.stat().st_size or client.llen(KEYS.queue("raw")):
            return False  # nothing can enter an in-flight list once the queue is empty
        return not any(client.llen(key) for key in client.scan_iter(match=KEYS.inflight("*")))

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def records_in(client: Any, key: str, has: bytes = b"") -> int:
    """Records in the list ``key`` (batches and runs counted by their items); with ``has``,
    the elements that contain it."""
    total = 0
    for start in range(0, client.llen(key), 1000):
        chunk = client.lrange(key, start, start + 999)
        total += sum(has in raw for raw in chunk) if has else sum(map(count_items, chunk))
    return total


def p2(count: int, runs: int, parsers: int = 1) -> None:
    work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    data = access_log(work / "access.log", count)
    server = private_redis(work / "redis")
    client = server.client()
    figures: dict[str, list[float]] = {"loglines": [], "syslog-ng": []}
    cpus: dict[str, list[dict[str, float]]] = {"loglines": [], "syslog-ng": []}
    try:
        for _ in range(runs):
            for name in figures:
                client.flushall()
                log = work / "target.log"
                log.write_bytes(b"")
                system: Any = (OursParsing(log, server.url, parsers) if name == "loglines"
                               else SyslogNg.parsed_to_redis(log, server.url, "parsed"))
                with system:
                    pids = system.pids()
                    settle(pids.values())
                    before = {n: cpu_seconds(pid) for n, pid in pids.items()}
                    started = time.perf_counter()
                    append(data, log)
                    if name == "loglines":
                        wait_until(lambda s=system: s.drained(client), timeout=3600)
                    else:
                        wait_until(lambda: client.llen("parsed") >= count, timeout=3600)
                    elapsed = time.perf_counter() - started
                    cpus[name].append(per_100k({n: cpu_seconds(pid) - before[n] for n, pid in pids.items()},
                                               count))
                figures[name].append(count / elapsed)
                if name == "loglines":
                    got, lost = records_in(client, KEYS.queue("parsed")), client.llen(KEYS.dead_letters)
                else:
                    got = records_in(client, "parsed", b'"clientip":')
                    lost = client.llen("parsed") - got
                if got != count or lost:
                    raise SystemExit(f"P2: {name} gave {got:,} parsed records for {count:,} lines "
                                     f"({lost:,} dead-lettered or unparsed)")
                log.unlink()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    o, p = statistics.median(figures["loglines"]), statistics.median(figures["syslog-ng"])
    copies = f" x{parsers} (numprocs)" if parsers > 1 else ""
    print(f"P2 file->parsed records in Redis, loglines watcher -> parser{copies} (accesslog): {o:,.0f} lines/s "
          f"({med(figures['loglines'])}); CPU s per 100,000 lines: {cpu_text(medians(cpus['loglines']))}")
    print(f"P2 file->parsed records in Redis, syslog-ng apache-accesslog-parser() -> redis(): {p:,.0f} "
          f"lines/s ({med(figures['syslog-ng'])}); CPU s per 100,000 lines: {cpu_text(medians(cpus['syslog-ng']))}")
    print(f"P2 ratio: {o / p:.2f}x; every line arrived as a parsed record on both sides")
    row(f"P2 file -> parsed records in Redis{copies} (lines/s, {count:,} lines, median of {runs})", f"{o:,.0f}",
        f"{p:,.0f} (syslog-ng)", f"{o / p:.2f}x", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["p1", "p2", "all"], nargs="?", default="all")
    parser.add_argument("--lines", type=int, default=1_000_000, help="P1 file size")
    parser.add_argument("--p2-lines", type=int, default=500_000, help="P2 file size")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parsers", type=int, default=1, help="P2: parser processes (numprocs)")
    args = parser.parse_args()
    if args.what in ("p1", "all"):
        p1(args.lines, args.runs)
    if args.what in ("p2", "all"):
        p2(args.p2_lines, args.runs, args.parsers)


if __name__ == "__main__":
    main()
