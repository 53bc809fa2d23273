"""P2: parser lines/s per process (take -> plugin -> push -> acknowledge), one process: the
parser worker's own loop (``pipeline.transforms.parser.run``) in this process, stopped once its
queue and its in-flight list are empty."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from bench.common import push_file, row, run_with_redis
from pipeline.config import loader
from pipeline.core import message
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.core.worker import consumer_id
from pipeline.transforms import parser


def run_once(client, log: Path, plugin_name: str) -> float:  # type: ignore[no-untyped-def]
    client.flushall()
    count = push_file(client, log)  # the parser's real input
    where = client.connection_pool.connection_kwargs
    path = log.with_name("loglines.cfg")
    path.write_text(f"[redis]\nurl = redis://{where['host']}:{where['port']}/0\n"
                    f"[worker_p]\ntype = parser\nlistento = raw\npushto = parsed\nother_queue = others\n"
                    f"plugin = {plugin_name}\n"
                    + ("opt_timezone = Europe/Prague\n" if plugin_name == "kontext" else ""))
    cfg = loader.load(path)
    program = cfg.worker("worker_p")
    parser.plugin_for(cfg, program)  # imports and the robots list made before the clock runs
    keys, flags = Keys(cfg.redis_for(program).prefix), Flags()
    queue, inflight = keys.queue("raw"), keys.inflight(consumer_id("worker_p"))

    finished: list[float] = []

    def stop_when_done() -> None:  # the clock stops here (the loop then waits out a BLMOVE)
        while not flags.stop:
            time.sleep(0.01)
            if client.llen(queue) == 0 and client.llen(inflight) == 0:
                finished.append(time.perf_counter())
                flags.stop = True

    watch = threading.Thread(target=stop_when_done, daemon=True)
    started = time.perf_counter()
    watch.start()
    parser.run(cfg, program, flags)
    elapsed = finished[0] - started
    done, others = (sum(message.count_items(raw) for at in range(0, client.llen(out), 100)
                        for raw in client.lrange(out, at, at + 99))  # a 1,000,000-line run is ~1 GB there
                    for out in (keys.queue("parsed"), keys.queue("others")))
    # every line a record, or passed over by the plugin (kontext's robots), none dead-lettered
    assert done + others == count and done > others and client.llen(keys.dead_letters) == 0, (done, others, count)
    return count / elapsed


def main() -> None:
    parser_ = argparse.ArgumentParser(description=__doc__)
    parser_.add_argument("--lines", type=int, default=1_000_000)
    parser_.add_argument("--runs", type=int, default=5)
    parser_.add_argument("--plugin", default="accesslog,kontext", help="comma-separated")
    args = parser_.parse_args()
    for name in args.plugin.split(","):
        figure = run_with_redis(args.lines, args.runs, f"parser ({name}) per process",
                                lambda client, log, n=name: run_once(client, log, n), kontext=name == "kontext")
        row(f"P2 parse, {name} plugin (lines/s per process, median of {args.runs})", f"{figure:,.0f}",
            target=">= 200,000" if name == "accesslog" else "")


if __name__ == "__main__":
    main()
