"""A real Prometheus (Debian's package, started here on 127.0.0.1 with a config and data
directory of its own, stopped by PID) scrapes the monitor of the demo pipeline running under a
real supervisord, with the console's credentials; its HTTP API has the queue lengths and the
lines counter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import config
from pipeline.core.connection import connect
from pipeline.core.keys import Keys
from tests.support.monitoring import Prometheus
from tests.support.procs import REPO
from tests.support.servers import free_port, wait_for


def loglines(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "-c", str(cfg), *args], capture_output=True,
                          text=True, timeout=180, cwd=cfg.parent)


def lines_in(*paths: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in paths if p.exists())


@pytest.mark.slow
def test_prometheus_scrapes_the_demo_pipeline(tmp_path: Path) -> None:
    demo = tmp_path / "demo-node"
    demo.mkdir()
    shutil.copytree(REPO / "demo", demo / "demo")
    (demo / ".venv").symlink_to(REPO / ".venv")
    port, console = free_port(), free_port()
    text = (REPO / "loglines.cfg").read_text().replace("port = 9001", f"port = {console}")
    text = text.replace("type = monitor\n", f"type = monitor\nlisten = 127.0.0.1:{port}\n"
                        "check_s = 1\ndisabled_rules = disk_low\n")
    text = text.replace("[redis]\n", "[loglines]\nexternal_queues = probe\n\n[redis]\n")
    cfg = demo / "loglines.cfg"
    cfg.write_text(text)
    assert loglines(cfg, "init").returncode == 0
    assert loglines(cfg, "up").returncode == 0
    loaded = config.load(cfg)
    password = loaded.supervisor.resolved_password()
    prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{port}", ("admin", password)).start()
    try:
        wait_for(lambda: any(t["health"] == "up" for t in prometheus.targets()), timeout=60,
                 what="Prometheus scraping the monitor")
        ctl = [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(demo / "supervisord.conf")]
        time.sleep(3)
        subprocess.run(ctl + ["stop", "process_traffic"], capture_output=True, timeout=60, check=True)
        client = connect(loaded.redis["redis"])
        client.rpush(Keys().queue("probe"), *[b'{"n": 1}'] * 7)  # a queue of our own, nobody reads it
        logs = (demo / "demo" / "access.log", demo / "var" / "live" / "access.log")
        total = lines_in(*logs)

        def scraped(expr: str) -> float | None:
            result = prometheus.query(expr)
            return float(result[0]["value"][1]) if result else None

        counter = 'loglines_worker_items_in_total{worker="logger_access", type="watcher"}'
        wait_for(lambda: scraped(counter) == total, timeout=60, what=f"{total} lines in Prometheus")
        wait_for(lambda: scraped('loglines_queue_length{queue="probe"}') == 7, timeout=30, what="the probe queue")
        assert scraped('loglines_queue_length{queue="access"}') == 0
        # the parser's counter moves when its acknowledgement lands, a moment after the queue empties
        wait_for(lambda: scraped('loglines_worker_items_out_total{worker="worker_parse"}') == total,
                 timeout=30, what=f"the parser's {total} lines out in Prometheus")

        def status() -> dict[str, Any]:
            return json.loads(loglines(cfg, "status", "--json").stdout)  # type: ignore[no-any-return]

        assert status()["workers"]["logger_access"]["items_total"] == total
        wait_for(lambda: scraped('loglines_worker_items_in_total{worker="logger_downloads"}')
                 == status()["workers"]["logger_downloads"]["items_total"], timeout=30,
                 what="Prometheus and status agreeing on the downloads logger")
        downloads = status()["workers"]["logger_downloads"]["items_total"]
        assert 0 < downloads < total
        assert scraped('loglines_process_state{program="worker_parse", state="RUNNING"}') == 1
        assert scraped("up") == 1 and scraped("loglines_supervisord_up") == 1
        assert scraped('sum(loglines_worker_batch_duration_seconds_count{worker="worker_parse"})') >= 1  # type: ignore[operator]
    finally:
        prometheus.stop()
        loglines(cfg, "down")
        wait_for(lambda: not (demo / "var" / "supervisord.pid").exists(), timeout=60, what="supervisord to exit")
