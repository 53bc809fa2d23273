"""The peer: rsyslog from Debian, started with its own configuration, work directory and PID
file, reading a file from its beginning (imfile) into Redis (omhiredis) or Elasticsearch
(omelasticsearch, bulk mode). Stopped by PID. ``make bench`` installs it when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import stop_daemon

PACKAGES = ("rsyslog", "rsyslog-hiredis", "rsyslog-elasticsearch")
BATCH = 500  # lines per dequeue batch: the same as the watcher's batch_lines

#: One item per line, in the shape loglines' watcher pushes (without src/off).
ITEM_TEMPLATE = """
template(name="item" type="list") {
  constant(value="{\\"service\\":\\"bench\\",\\"logline\\":\\"")
  property(name="msg" format="json")
  constant(value="\\"}")
}
"""

#: A document per line: the raw line and the time rsyslog read it.
DOC_TEMPLATE = """
template(name="doc" type="list") {
  constant(value="{\\"service\\":\\"bench\\",\\"logline\\":\\"")
  property(name="msg" format="json")
  constant(value="\\",\\"@timestamp\\":\\"")
  property(name="timereported" dateFormat="rfc3339")
  constant(value="\\"}")
}
"""

#: The same with the line's number (``seq=N`` in its URL) as a field: P5 finds each line by it.
DOC_SEQ_TEMPLATE = """
template(name="docseq" type="list") {
  constant(value="{\\"service\\":\\"bench\\",\\"logline\\":\\"")
  property(name="msg" format="json")
  constant(value="\\",\\"seq\\":")
  property(name="msg" regex.type="ERE" regex.expression="seq=([0-9]+)" regex.submatch="1"
           regex.nomatchmode="ZERO")
  constant(value=",\\"@timestamp\\":\\"")
  property(name="timereported" dateFormat="rfc3339")
  constant(value="\\"}")
}
"""



def binary() -> str:
    found = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else "")
    if not found:
        raise SystemExit("rsyslogd is not installed: apt-get install " + " ".join(PACKAGES))
    return found


#: threads of the ruleset's queue, each with its own connection and bulk in flight (as numprocs)
WORKERS = int(os.environ.get("BENCH_RSYSLOG_WORKERS", "1"))


class Rsyslog:
    def __init__(self, log: Path, module: str, output: str, templates: str = "") -> None:
        self.work = Path(tempfile.mkdtemp(prefix="loglines-rsyslog-"))
        (self.work / "state").mkdir()
        self.conf, self.pidfile = self.work / "rsyslog.conf", self.work / "rsyslog.pid"
        self.conf.write_text(f"""
global(workDirectory="{self.work}/state" maxMessageSize="64k")
module(load="imfile")
module(load="{module}")
{ITEM_TEMPLATE}
{templates}
input(type="imfile" File="{log}" Tag="bench" freshStartTail="off" ruleset="out")
ruleset(name="out" queue.type="LinkedList" queue.size="200000"
        queue.dequeueBatchSize="{BATCH}" queue.workerThreads="{WORKERS}") {{
{output}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def to_redis(cls, log: Path, redis_url: str, key: str) -> Rsyslog:
        parts = urlsplit(redis_url)
        return cls(log, "omhiredis",
                   f'action(type="omhiredis" server="{parts.hostname}" serverport="{parts.port}" '
                        f'mode="queue" key="{key}" template="item")')

    @classmethod
    def to_elasticsearch(cls, log: Path, es_url: str, index: str, seq: bool = False) -> Rsyslog:
        """One document per line; with ``seq`` the line's ``seq=N`` is its field ``seq``."""
        parts = urlsplit(es_url)
        return cls(log, "omelasticsearch",
                   f'action(type="omelasticsearch" server="{parts.hostname}" serverport="{parts.port}" '
                   f'searchIndex="{index}" bulkmode="on" maxbytes="10m" template="{"docseq" if seq else "doc"}" '
                   'esVersion.major="8" action.resumeRetryCount="-1")',
                   DOC_SEQ_TEMPLATE if seq else DOC_TEMPLATE)

    def start(self) -> Rsyslog:
        checked = subprocess.run([binary(), "-N1", "-f", str(self.conf)], capture_output=True, text=True)
        if checked.returncode != 0:
            raise SystemExit(f"rsyslog refuses the benchmark's configuration:\n{checked.stderr}")
        self.proc = subprocess.Popen([binary(), "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                                     stdout=open(self.work / "rsyslog.out", "ab"), stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        stop_daemon(self.proc, self.work)

    def __enter__(self) -> Rsyslog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate, timeout: float = 600, interval: float = 0.02) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``predicate()`` held."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("the peer did not finish in time")
        time.sleep(interval)
    return time.perf_counter() - started
