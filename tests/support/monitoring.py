"""Helpers of the monitoring tests: a scrape, a real Prometheus, a real headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import free_port, wait_for


def get(url: str, auth: tuple[str, str] | None = None, token: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""  # nothing listens there (yet)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return parsed[(name, tuple(sorted(labels.items())))]


def need(binary: str) -> str:
    """A Debian package's binary; ``make test`` installs the package when it is missing."""
    found = shutil.which(binary)
    if found is None:
        pytest.fail(f"{binary} is not installed: `make test` installs it (apt-get install {binary})")
    return found


class Prometheus:
    """Debian's prometheus on 127.0.0.1 with a config and data directory of its own."""

    def __init__(self, work: Path, target: str, auth: tuple[str, str], interval: str = "1s") -> None:
        self.work, self.port = work, free_port()
        work.mkdir(parents=True, exist_ok=True)
        (work / "password").write_text(auth[1])
        (work / "prometheus.yml").write_text(f"""
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: loglines
    basic_auth:
      username: {auth[0]}
      password_file: {work / "password"}
    static_configs:
      - targets: ["{target}"]
""")
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        self.proc = subprocess.Popen(
            [need("prometheus"), f"--config.file={self.work / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.work / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=open(self.work / "prometheus.log", "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: self._ready(), timeout=60, what="prometheus ready")
        return self

    def _ready(self) -> bool:
        try:
            return get(self.url + "/-/ready")[0] == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, body = get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(json.loads(get(self.url + "/api/v1/targets")[1])["data"]["activeTargets"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)


def chromium(work: Path, url: str, screenshot: Path | None = None) -> str:
    """Headless Chromium: the DOM of ``url`` as rendered (and a screenshot)."""
    profile = work / f"profile-{time.monotonic_ns()}"
    profile.mkdir(parents=True)
    args = [need("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1200,1000"]
    if screenshot is not None:
        subprocess.run(args + [f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    done = subprocess.run(args + ["--dump-dom", url], capture_output=True, timeout=120, check=True, text=True)
    return done.stdout
