"""Shared pieces of the benchmarks: data, a private Redis, medians."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.genlog import kontext_lines, lines
from tests.support.servers import RedisServer


def access_log(path: Path, count: int, seed: int = 1, kontext: bool = False) -> Path:
    if not path.exists() or path.stat().st_size == 0:
        with path.open("w") as handle:
            batch = []
            for line in (kontext_lines(count, seed) if kontext else lines(count, seed)):
                batch.append(line)
                if len(batch) == 10000:
                    handle.write("\n".join(batch) + "\n")
                    batch.clear()
            if batch:
                handle.write("\n".join(batch) + "\n")
    return path


def append(source: Path, target: Path) -> None:
    """Append the whole of ``source`` to ``target`` (a file a running system is reading)."""
    with source.open("rb") as src, target.open("ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def stop_daemon(proc: subprocess.Popen[bytes] | None, work: Path) -> None:
    """A peer run in the foreground: SIGTERM, SIGKILL after 30 s; its work directory removed."""
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    shutil.rmtree(work, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (/proc/<pid>/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pids: Iterable[int], timeout: float = 60) -> None:
    """Wait until processes just started are idle (imports done, connections made): together
    under 5 % of a core over half a second; at most ``timeout`` seconds."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    last = sum(map(cpu_seconds, pids))
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(map(cpu_seconds, pids))
        if now - last < 0.025:
            return
        last = now


def private_redis(workdir: Path | None = None) -> RedisServer:
    """A redis-server for one benchmark: AOF off (we measure loglines, not the disk)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    server = RedisServer(workdir)
    server.extra = ["--appendonly", "no"]
    return server.start()


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, float, float]:
    """Median, min and max of ``runs`` measurements."""
    values = [measure() for _ in range(runs)]
    return statistics.median(values), min(values), max(values)


def push_file(client, log: Path, batch_lines: int = 500) -> int:  # type: ignore[no-untyped-def]
    """Run the watcher's code over the whole file into the queue ``raw``; lines pushed."""
    from pipeline.core.keys import Keys
    from pipeline.core.lifecycle import Flags
    from pipeline.sources.watcher import Watcher, WatcherOptions

    opts = WatcherOptions(logfile=(str(log),), pushto="raw", servicename="bench", batch_lines=batch_lines)
    watcher = Watcher("bench", opts, client, Keys(), Flags())
    watcher.load_state()
    watcher.rescan(first=True)
    while watcher.pump():
        pass
    watcher.flush_due(force=True)
    for tail in watcher.tails.values():
        tail.close()
    return watcher.lines_pushed


def run_with_redis(lines_count: int, runs: int, label: str, measure: Callable[..., float],
                   kontext: bool = False) -> float:
    """Make the data and a private Redis, print ``label: median (spread)`` of ``measure``."""
    work = Path(tempfile.mkdtemp(prefix="loglines-bench-"))
    log = access_log(work / "access.log", lines_count, kontext=kontext)
    server = private_redis(work / "redis")
    try:
        client = server.client()
        med, low, high = median_of(runs, lambda: measure(client, log))
        print(f"{label}: {med:,.0f} lines/s (median of {runs}, {low:,.0f}..{high:,.0f})")
        return med
    finally:
        server.stop()


#: Our worker sections, by what they do (numprocs copies are named ``<section>_NN``).
ROLES = {"logger_w": "watcher", "worker_p": "parser", "worker_e": "indexer"}


def med(values: list[float]) -> str:
    return f"median of {len(values)}, {min(values):,.0f}..{max(values):,.0f}"


def per_100k(cpu: dict[str, float], count: int) -> dict[str, float]:
    """CPU seconds per 100,000 lines, our numprocs copies added up under their role."""
    out: dict[str, float] = {}
    for name, seconds in cpu.items():
        role = ROLES.get(name[:8], name)
        out[role] = out.get(role, 0.0) + seconds * 100_000 / count
    return out


def cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in cpu.items())


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def row(benchmark: str, ours: str, peer: str = "-", ratio: str = "-", target: str = "") -> None:
    """One row of ``make bench``'s table (bench/run.py collects the lines starting ``ROW|``)."""
    print("|".join(("ROW", benchmark, ours, peer, ratio, target)), flush=True)


@contextmanager
def elasticsearch() -> Iterator[tuple[str, int | None]]:
    """The node to benchmark against: ``$LOGLINES_TEST_ES_URL``, else the test node started
    here (and removed after); its URL and, when started here, its PID."""
    url = os.environ.get("LOGLINES_TEST_ES_URL", "")
    if url:
        yield url, None
        return
    from tests.conftest import EsNode

    build = Path(tempfile.mkdtemp(prefix="loglines-es-build-"))
    build.chmod(0o755)
    node = EsNode(build).start()
    try:
        yield node.url, node.pid
    finally:
        node.remove()
        shutil.rmtree(build, ignore_errors=True)
