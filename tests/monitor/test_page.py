"""The status page in a real browser: Debian's Chromium, headless, loads it with the console's
password; the screenshot is kept as an artifact and the rendered DOM holds the queue lengths;
without the password the page answers 401."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import redis

from pipeline.core.keys import Keys
from tests.support.monitoring import chromium, get
from tests.support.procs import Worker
from tests.support.servers import free_port, wait_for

K = Keys()
#: where the screenshot is kept after the run (printed by the test)
ARTIFACTS = Path(os.environ.get("LOGLINES_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "var" / "test-artifacts"))


def test_the_status_page_in_chromium_with_the_password_and_401_without(write_cfg, r: redis.Redis,  # type: ignore[no-untyped-def]
                                                                       tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "access.log"
    log.write_text("")
    cfg = write_cfg(f"""
        [loglines]
        external_queues = backlog

        [logger_access]
        type = watcher
        logfile = {log}
        pushto = access

        [worker_parse]
        type = parser
        listento = access
        plugin = accesslog
        pushto = downloads

        [worker_monitor]
        type = monitor
        listen = 127.0.0.1:{port}
        check_s = 0.2
        sample_s = 0.2
        queue_max_messages = 40
        disabled_rules = supervisord_down
    """)
    workers = [Worker(cfg, name, tmp_path).start() for name in ("logger_access", "worker_parse", "worker_monitor")]
    base = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: get(base + "healthz", ("admin", "test-password"))[0] == 200, timeout=30, what="the monitor")
        r.rpush(K.queue("downloads"), *[b'[{"kind": "download"}]'] * 17)  # nobody reads downloads here
        for n in range(1, 6):
            r.rpush(K.queue("backlog"), *[b"{}"] * (10 * n))
            wait_for(lambda: get(base + "healthz", ("admin", "test-password"))[0] in (200, 503), timeout=5)
        wait_for(lambda: b"queue_over" in get(base, ("admin", "test-password"))[1], timeout=20, what="the alert shown")

        assert get(base)[0] == 401
        assert get(base, ("admin", "wrong-password"))[0] == 401
        without = chromium(tmp_path, base)
        assert 'data-queue="downloads"' not in without

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        dom = chromium(tmp_path, f"http://admin:test-password@127.0.0.1:{port}/", screenshot=tmp_path / "page.png")
        shutil.copy(tmp_path / "page.png", shot)
        print(f"\nscreenshot of the status page: {shot}")
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        def length(queue: str) -> int:
            match = re.search(rf'data-queue="{queue}"><td>{queue}</td><td class="n queue-length">(\d+)</td>', dom)
            assert match, dom[:3000]
            return int(match.group(1))

        assert length("downloads") == 17 and length("backlog") == 150 and length("access") == 0
        assert 'class="bad alert" data-rule="queue_over"' in dom and "queue backlog holds 150 messages" in dom
        assert dom.count("<svg") >= 5 and "<polyline" in dom  # a chart per queue and per worker
        assert 'href="http://127.0.0.1:' in dom and "supervisord console" in dom
        assert str(log) in dom  # the watched file with its lag
    finally:
        for w in workers:
            w.stop()
