"""``make bench``: every benchmark, one table, written to bench/results/<date>.md."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = [
    ["bench.redis_peers_bench", "--runs", "3"],
    ["bench.parser_bench", "--runs", "3"],
    ["bench.instructions"],
    ["bench.es_bench", "--docs", "50000", "--runs", "3"],
    ["bench.peers_bench", "es", "--runs", "3"],
    ["bench.tracker_bench", "--runs", "3"],
    ["bench.http_bench", "--runs", "3"],
    ["bench.forward_bench", "--outage", "600"],
    ["bench.replicas_bench"],
    ["bench.report_bench", "--records", "1000000", "--runs", "3"],
]
HEAD = ["benchmark", "loglines", "peer (same run)", "ratio", "target"]
PEERS = ("P1/P4/P5/P6: rsyslog {version} from Debian (imfile -> omhiredis, imfile -> "
         "omelasticsearch in bulk mode); P1/P2: syslog-ng {syslogng} from Debian, unpacked privately "
         "(file() -> redis(), raw or parsed by apache-accesslog-parser(), flow control on); P3: a "
         "minimal raw _bulk loader; P7: a Flask app under gunicorn ((2 x cores) + 1 sync workers) "
         "pushing each request to Redis; P8: a script scrolling every record into Python")


def machine() -> str:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def rsyslog_version() -> str:
    try:
        from bench.rsyslog import binary

        out = subprocess.run([binary(), "-v"], capture_output=True, text=True).stdout
        return out.split()[1]
    except (SystemExit, OSError, IndexError):
        return "(not installed)"


def syslogng_version() -> str:
    try:
        from bench.syslogng import version

        return version()
    except (SystemExit, OSError):
        return "(not unpacked)"


def main() -> None:
    rows: list[list[str]] = []
    for module in BENCHMARKS:
        print(f"== {' '.join(module)}", flush=True)
        proc = subprocess.Popen([sys.executable, "-m", *module], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ROW|"):
                rows.append(line.rstrip("\n").split("|")[1:])
            else:
                print("   " + line.rstrip(), flush=True)
        if proc.wait() != 0:
            raise SystemExit(f"{' '.join(module)} failed")
    table = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    peers = PEERS.format(version=rsyslog_version(), syslogng=syslogng_version())
    text = (f"# Benchmarks {time.strftime('%Y-%m-%d')}\n\n{machine()}\n\n"
            f"Peers: {peers}.\n\n" + "\n".join(table) + "\n")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"{time.strftime('%Y-%m-%d')}.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
