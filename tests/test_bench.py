"""The benchmarks run: each ``make bench`` runs, on a few lines, as ``make bench`` runs it.

No figure is judged here (speed is for the benchmarks, on a quiet machine); what is checked is
that each one still measures: it ends well, its own checks pass (every line counted, every
event sent, the reports equal), and it prints its table rows with a figure in them. A
benchmark that broke would otherwise be found only on the day it was needed. The peers'
benchmarks (rsyslog, syslog-ng, gunicorn, wrk) are left to ``make bench``: their peers are not
installed for the tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIGURE = re.compile(r"\d[\d,.]*")


def run_bench(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> list[list[str]]:
    """Run ``python -m bench.<args>``; its ``ROW|`` lines, split."""
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    rows = [line.split("|")[1:] for line in done.stdout.splitlines() if line.startswith("ROW|")]
    if not rows and args[0] == "bench.watcher_bench":  # a tool of its own, outside make bench's table
        rows = [["", line] for line in done.stdout.splitlines() if "lines/s" in line]
    assert rows, f"{' '.join(args)} printed no row:\n{done.stdout[-2000:]}"
    for row in rows:
        assert FIGURE.search(row[1]), f"{' '.join(args)}: no figure in {row}"
    return rows


@pytest.mark.parametrize("args", [
    ("bench.parser_bench", "--lines", "3000", "--runs", "1"),  # accesslog and kontext (which passes robots over)
    ("bench.watcher_bench", "--lines", "3000", "--runs", "1"),
    ("bench.tracker_bench", "--events", "100", "--runs", "1"),
    ("bench.replicas_bench", "--seconds", "2"),
], ids=lambda args: args[0])
def test_a_redis_benchmark_runs(args: tuple[str, ...]) -> None:
    run_bench(*args)


def test_the_instruction_count_runs_and_repeats_exactly() -> None:
    """callgrind's count is the same from one run to the next: what the benchmark is for."""
    first, second = (run_bench("bench.instructions", "--lines", "500") for _ in range(2))
    assert first == second and len(first) == 2


@pytest.mark.parametrize("args", [
    ("bench.es_bench", "--docs", "2000", "--runs", "1"),
    ("bench.report_bench", "--records", "5000", "--runs", "1"),
], ids=lambda args: args[0])
def test_an_elasticsearch_benchmark_runs(args: tuple[str, ...], es_url: str) -> None:
    run_bench(*args, env={"LOGLINES_TEST_ES_URL": es_url})
