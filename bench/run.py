"""``make bench``: every benchmark, one table, written to bench/results/<date>.md."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = [
    ("P1 watcher file->Redis (lines/s)", ["bench.watcher_bench"]),
    ("P2 parser, accesslog (lines/s per process)", ["bench.parser_bench"]),
    ("Tracker forwarder (events/s, local tracker)", ["bench.tracker_bench"]),
    ("P3/P4 Elasticsearch", ["bench.es_bench"]),
]


def machine() -> str:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main() -> None:
    rows = []
    for title, module in BENCHMARKS:
        out = subprocess.run([sys.executable, "-m", *module], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()
        for result in out:
            label, _, figure = result.partition(": ")
            rows.append((title if len(out) == 1 else f"{title}, {label}", figure.strip()))
            print(f"{rows[-1][0]}: {rows[-1][1]}", flush=True)
    table = ["| benchmark | result |", "| --- | --- |"] + [f"| {t} | {r} |" for t, r in rows]
    text = f"# Benchmarks {time.strftime('%Y-%m-%d')}\n\n{machine()}\n\n" + "\n".join(table) + "\n"
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"{time.strftime('%Y-%m-%d')}.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
