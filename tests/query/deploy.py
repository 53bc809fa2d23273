"""A pipeline for the query tests: watcher -> parser (accesslog) -> esindexer (template access)
and the API worker on top, as real processes against a real Redis and Elasticsearch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import requests
from elasticsearch import Elasticsearch

from tests.support.procs import REPO, Worker
from tests.support.servers import free_port, wait_for

TOKEN = "reader-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
READ = {"Authorization": f"Bearer {TOKEN}"}
ADMINISTER = {"Authorization": f"Bearer {ADMIN}"}


class Deployment:
    def __init__(self, tmp: Path, redis_url: str, es_url: str, index: str = "", pipeline: bool = True,
                 api_extra: str = "") -> None:
        self.tmp, self.es_url = tmp, es_url
        self.prefix = f"q{uuid.uuid4().hex[:8]}"
        self.index = (index or "{prefix}-access-%Y.%m.%d").format(prefix=self.prefix)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "access.log"
        (tmp / "tokens").write_text(f"# who may read\nreader:{TOKEN}\n")
        (tmp / "admins").write_text(f"ops:{ADMIN}\n")
        head = f"""
            [supervisor]
            password = test-password
            [redis]
            url = {redis_url}
            heartbeat_ttl = 3
        """
        flow = f"""
            [logger_access]
            type = watcher
            logfile = {self.log}
            pushto = raw
            [worker_parse]
            type = parser
            listento = raw
            pushto = parsed
            plugin = accesslog
        """ if pipeline else ""
        self.cfg = tmp / "loglines.cfg"
        self.cfg.write_text(textwrap.dedent(head) + textwrap.dedent(flow) + textwrap.dedent(f"""
            [worker_es]
            type = esindexer
            listento = parsed
            hosts = {es_url}
            index = {self.index}
            template = access
            max_backoff = 2
            [worker_api]
            type = api
            esindexer = worker_es
            tokens_file = tokens
            admin_tokens_file = admins
            listen = 127.0.0.1:{self.port}
            platform = Example Repository
            platform_id = examplerepo
            base_url = https://repo.example.org
            audit_index = {self.prefix}-audit
        """) + textwrap.dedent(api_extra))
        logs = tmp / "logs"
        logs.mkdir(exist_ok=True)
        names = ["logger_access", "worker_parse", "worker_es"] if pipeline else []
        self.workers = {name: Worker(self.cfg, name, logs) for name in [*names, "worker_api"]}
        self.es = Elasticsearch(es_url, request_timeout=120)

    def loglines(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline", "-c", str(self.cfg), *args], cwd=self.tmp,
                              capture_output=True, text=True, timeout=600, check=check,
                              env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})

    def setup(self) -> Deployment:
        self.loglines("es", "setup", "--worker", "worker_es")
        return self

    def start(self, *names: str) -> Deployment:
        for name in names or list(self.workers):
            self.workers[name].start()
        if "worker_api" in (names or self.workers):
            wait_for(self._up, timeout=30, what="the API worker listening")
        return self

    def _up(self) -> bool:
        try:
            return requests.get(self.url + "/healthz", headers=READ, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    @property
    def pattern(self) -> str:
        return self.index.split("%", 1)[0] + "*" if "%" in self.index else self.index

    def count(self) -> int:
        self.es.options(ignore_status=404).indices.refresh(index=self.pattern)
        return int(self.es.options(ignore_status=404).count(index=self.pattern).get("count", 0))

    def get(self, path: str, headers: dict[str, str] | None = None, **params: object) -> requests.Response:
        return requests.get(self.url + path, params=params, headers=READ if headers is None else headers, timeout=120)

    def close(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        names = list(self.es.options(ignore_status=404).indices.get(index=f"{self.prefix}-*,{self.pattern}",
                                                                     expand_wildcards="all"))
        for name in names:  # by name: Elasticsearch deletes no wildcard
            self.es.options(ignore_status=404).indices.delete(index=name)
        self.es.close()
