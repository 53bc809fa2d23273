"""P9: the forwarder, node to node over loopback.

- throughput: 400 batches of 500 events in the site's queue, forwarded to a receiving node's
  HTTP ingest (its Redis with appendfsync always): events/s until the receiver holds them all;
- spool replay: 1,000,000 events (2,000 batches) spilled to the spool while the target is down
  (``queue_max_items = 10``), then the target comes back: events/s until the spool is empty;
- an outage: the target down for ``--outage`` seconds (600) while 1,000 events/s arrive: the
  site's Redis memory (used_memory) and the forwarder's RSS, sampled every 10 s (flat?).

    python -m bench.forward_bench [--outage 600]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import orjson

from tests.support.procs import REPO
from tests.support.proxy import FaultProxy
from tests.support.servers import RedisServer, free_port

TOKEN = "bench-forward-token-0123456789"


def batch(first: int, size: int = 500) -> bytes:
    return orjson.dumps([{"service": "bench", "src": "f", "off": n, "logline": f"seq={n} GET /item/{n} 200"}
                         for n in range(first, first + size)])


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def worker(cfg: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "-c", str(cfg), "worker", name],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=cfg.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outage", type=float, default=600)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loglines-forward-bench-"))
    site_redis = RedisServer(work / "site-redis").start()
    central_redis = RedisServer(work / "central-redis").start()
    (work / "tokens").write_text(f"site:{TOKEN}\n")
    port = free_port()
    proxy = FaultProxy(port)
    (work / "central.cfg").write_text(textwrap.dedent(f"""
        [redis]
        url = {central_redis.url}
        [worker_ingest]
        type = http
        pushto = received
        tokens_file = tokens
        listen = 127.0.0.1:{port}
        high_water = 100000000
    """))
    (work / "site.cfg").write_text(textwrap.dedent(f"""
        [redis]
        url = {site_redis.url}
        [worker_fwd]
        type = forward
        listento = raw
        targets = central=http://127.0.0.1:{proxy.port}/v1/events
        tokens_file = tokens
        queue_max_items = 10
        max_failover_duration = 2
        spool_dir = {work / "spool"}
    """))
    site, central = site_redis.client(), central_redis.client()
    ingest = worker(work / "central.cfg", "worker_ingest")
    forwarder = None
    try:
        time.sleep(2)
        site.rpush("{loglines}:q:raw", *[batch(n * 500) for n in range(400)])
        started = time.monotonic()
        forwarder = worker(work / "site.cfg", "worker_fwd")
        while central.llen("{loglines}:q:received") < 400:
            time.sleep(0.05)
        rate = 400 * 500 / (time.monotonic() - started)
        print(f"forwarded {rate:,.0f} events/s node to node (batches of 500)", flush=True)

        central.delete("{loglines}:q:received")
        proxy.mode = "refuse"
        proxy.drop_all()
        site.rpush("{loglines}:q:raw", *[batch(n * 500) for n in range(2000)])
        figures = {}
        while figures.get("spool_batches", 0) < 1980:
            time.sleep(1)
            raw = site.hget("{loglines}:forward:worker_fwd", "central")
            figures = orjson.loads(raw) if raw else {}
        started = time.monotonic()
        proxy.mode = "pass"
        while central.llen("{loglines}:q:received") < 2000:
            time.sleep(0.1)
        replay = 2000 * 500 / (time.monotonic() - started)
        print(f"replayed a spool of 1,000,000 events at {replay:,.0f} events/s", flush=True)

        central.delete("{loglines}:q:received")
        proxy.mode = "refuse"
        proxy.drop_all()
        samples = []
        ends = time.monotonic() + args.outage
        n = 10_000_000
        while time.monotonic() < ends:
            for _ in range(10):
                site.rpush("{loglines}:q:raw", batch(n, 100))
                n += 100
                time.sleep(0.1)
            if len(samples) == 0 or time.monotonic() - samples[-1][0] >= 10:
                samples.append((time.monotonic(), int(site.info("memory")["used_memory"]) // (1024 * 1024),
                                rss(forwarder.pid)))
        proxy.mode = "pass"
        memory = [m for _, m, _ in samples]
        resident = [r for _, _, r in samples]
        print(f"{args.outage:.0f} s outage at 1,000 events/s: site Redis {memory[0]}-{max(memory)} MiB "
              f"(last {memory[-1]}), forwarder RSS {resident[0]}-{max(resident)} MiB (last {resident[-1]})",
              flush=True)
        print(f"ROW|P9 forward node to node, batches of 500|{rate:,.0f} events/s|-|-|-")
        print(f"ROW|P9 forward, replay of a 1,000,000-event spool|{replay:,.0f} events/s|-|-|-")
        print(f"ROW|P9 forward, {args.outage / 60:g}-minute outage at 1,000 events/s|site Redis "
              f"{memory[0]}->{memory[-1]} MiB (max {max(memory)}), forwarder RSS {resident[0]}->"
              f"{resident[-1]} MiB (max {max(resident)})|-|-|flat")
    finally:
        for proc in (forwarder, ingest):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)
        proxy.close()
        site_redis.kill()
        central_redis.kill()


if __name__ == "__main__":
    main()
