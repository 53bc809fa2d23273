"""What ``min_replicas`` costs: acknowledgements per second of a consumer, on a master with
one replica on loopback, with ``min_replicas = 0`` and ``1`` (appendfsync always on both).

    python -m bench.replicas_bench [--seconds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.config import RedisConfig
from pipeline.core import message
from pipeline.core.connection import connect
from pipeline.core.queue import Consumer, Outcome
from tests.support.servers import RedisServer, wait_for


def rate(cfg: RedisConfig, seconds: float) -> float:
    client = connect(cfg)
    consumer = Consumer(client, cfg, "bench", f"bench/{cfg.min_replicas}", "bench")
    consumer.start()
    payload = message.encode([{"n": n} for n in range(50)])
    client.rpush("{loglines}:q:bench", *[payload] * 20000)
    done, ends = 0, time.monotonic() + seconds
    while time.monotonic() < ends:
        delivery = consumer.take()
        if delivery is None:
            break
        consumer.ack(delivery, Outcome(pushes=[("out", payload)], count=50))
        done += 1
    client.delete("{loglines}:q:bench", "{loglines}:q:out")
    return done / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loglines-replicas-bench-"))
    master = RedisServer(work / "master").start()
    replica = RedisServer(work / "replica").start()
    replica.client().replicaof("127.0.0.1", master.port)
    wait_for(lambda: replica.client().info("replication").get("master_link_status") == "up")
    try:
        base = RedisConfig(url=master.url, embedded=False)
        plain = rate(base, args.seconds)
        waited = rate(RedisConfig(url=master.url, embedded=False, min_replicas=1), args.seconds)
        print(f"acknowledgements/s (batches of 50): min_replicas = 0: {plain:,.0f}; = 1: {waited:,.0f}")
        print(f"ROW|min_replicas = 1, acknowledgements/s of 50-item batches|{waited:,.0f}|"
              f"{plain:,.0f} (min_replicas = 0)|{waited / plain:.2f}x|-")
    finally:
        master.kill()
        replica.kill()


if __name__ == "__main__":
    main()
