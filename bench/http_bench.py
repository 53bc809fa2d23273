"""P7: HTTP ingest beside what the crowdsourcing logger did, on the same machine, same run.

Ours: the ``http`` worker (uvicorn, httptools, uvloop; group commit) into a Redis with
``appendfsync always``. The baseline: a Flask app under gunicorn that pushes each request to
Redis (its own RPUSH, as the crowdsourcing logger's backends did), with gunicorn's documented
worker count for the machine, (2 x cores) + 1 sync workers. Load: ``wrk``, 64 connections,
single-event requests; and NDJSON batches of 500 events (ours only: the baseline takes one
event a request). Prints requests/s, p99 latency and the ratio.

    python -m bench.http_bench [--runs 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import redis

from bench.common import median_of
from tests.support.servers import RedisServer, free_port

TOKEN = "bench-token-0123456789abcdef"
REPO = Path(__file__).resolve().parents[1]

BASELINE = '''
import json, os, time
import redis
from flask import Flask, request
app = Flask(__name__)
r = redis.Redis(port=int(os.environ["BENCH_REDIS_PORT"]))

@app.route("/logger/insert", methods=["POST"])
def insert():
    event = json.loads(request.get_data())
    event["timestamp"] = time.time()
    r.rpush("crowd", json.dumps(event))
    return "True"
'''

SINGLE = ('wrk.method = "POST"\n'
          """wrk.body = '{"worker_id": "w-17", "task": "label-42", "event": "submit", "answer": "cat"}'\n"""
          'wrk.headers["Content-Type"] = "application/json"\n'
          f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n')


def batch_script() -> str:
    lines = "\\n".join(f'{{\\"worker_id\\": \\"w-{n}\\", \\"task\\": \\"label-42\\", \\"event\\": \\"submit\\"}}'
                       for n in range(500))
    return (f'wrk.method = "POST"\nwrk.body = "{lines}"\nwrk.headers["Content-Type"] = "application/x-ndjson"\n'
            f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n')


def wrk(url: str, script: Path, seconds: int, connections: int = 64) -> tuple[float, float]:
    """Requests/s and p99 in milliseconds."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} answers were not 2xx")
    return rate, p99


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (Debian package wrk; make bench installs it)")
    work = Path(tempfile.mkdtemp(prefix="loglines-http-bench-"))
    server = RedisServer(work / "redis")  # appendonly yes, appendfsync always: what is promised
    server.start()
    (work / "tokens").write_text(f"bench:{TOKEN}\n")
    (work / "single.lua").write_text(SINGLE)
    (work / "batch.lua").write_text(batch_script())
    (work / "baseline.lua").write_text(SINGLE)
    (work / "app.py").write_text(BASELINE)
    client = redis.Redis(port=server.port)
    results: dict[str, tuple[float, float, float]] = {}
    try:
        for processes in (1, 2):
            port = free_port()
            cfg = work / f"loglines-{processes}.cfg"
            cfg.write_text(textwrap.dedent(f"""
                [redis]
                url = {server.url}
                [worker_ingest]
                type = http
                pushto = events
                tokens_file = tokens
                listen = 127.0.0.1:{port}
                high_water = 100000000
                numprocs = {processes}
            """))
            env = dict(os.environ, PYTHONPATH=str(REPO))
            procs = [subprocess.Popen([sys.executable, "-m", "pipeline", "-c", str(cfg), "worker", "worker_ingest"],
                                      env=dict(env, SUPERVISOR_PROCESS_NAME=f"ingest_{n}"), cwd=work,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for n in range(processes)]
            try:
                wait_port(port)
                time.sleep(1)
                url = f"http://127.0.0.1:{port}/v1/events"
                p99s: list[float] = []

                def single(url: str = url, p99s: list[float] = p99s) -> float:
                    client.delete("{loglines}:q:events")
                    rate, p99 = wrk(url, work / "single.lua", args.seconds)
                    p99s.append(p99)
                    return rate

                median, low, high = median_of(args.runs, single)
                results[f"single x{processes}"] = (median, sorted(p99s)[len(p99s) // 2], high)
                print(f"loglines http, {processes} process(es), single events: {median:,.0f} req/s "
                      f"(min {low:,.0f}, max {high:,.0f}), p99 {results[f'single x{processes}'][1]:.1f} ms",
                      flush=True)

                def batch(url: str = url) -> float:
                    client.delete("{loglines}:q:events")
                    return wrk(url, work / "batch.lua", args.seconds, connections=16)[0] * 500

                median, low, high = median_of(args.runs, batch)
                results[f"batch x{processes}"] = (median, 0.0, high)
                print(f"loglines http, {processes} process(es), NDJSON batches of 500: {median:,.0f} events/s",
                      flush=True)
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(timeout=30)
        port = free_port()
        workers = 2 * (os.cpu_count() or 1) + 1
        gunicorn = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}",
                    "--chdir", str(work), "--log-level", "warning", "app:app"]
        base = subprocess.Popen(gunicorn, env=dict(os.environ, BENCH_REDIS_PORT=str(server.port)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            time.sleep(1)
            p99s = []

            def baseline() -> float:
                rate, p99 = wrk(f"http://127.0.0.1:{port}/logger/insert", work / "baseline.lua", args.seconds)
                p99s.append(p99)
                return rate

            b_median, _, _ = median_of(args.runs, baseline)
            b_p99 = sorted(p99s)[len(p99s) // 2]
            print(f"Flask + gunicorn ({workers} sync workers), single events: {b_median:,.0f} req/s, "
                  f"p99 {b_p99:.1f} ms", flush=True)
        finally:
            base.terminate()
            base.wait(timeout=30)
        best = max(("single x1", "single x2"), key=lambda k: results[k][0])
        rate, p99, _ = results[best]
        events = max(results["batch x1"][0], results["batch x2"][0])
        print(f"ROW|P7 HTTP ingest, single events ({best.split()[1]}), req/s|{rate:,.0f} (p99 {p99:.1f} ms)|"
              f"{b_median:,.0f} (p99 {b_p99:.1f} ms), Flask+gunicorn|{rate / b_median:.1f}x|"
              ">= 10,000 req/s, p99 <= 20 ms, >= 5x")
        print(f"ROW|P7 HTTP ingest, NDJSON batches of 500, events/s|{events:,.0f}|-|-|>= 300,000")
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
