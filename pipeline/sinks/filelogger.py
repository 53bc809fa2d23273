"""The file logger: appends items to a file, exactly once.

Each batch is written, flushed and (by default) fsynced before its acknowledgement; the same
transaction that acknowledges it saves the file's new size. At start, bytes past the saved size
belong to a batch that was written but never acknowledged: before each batch they are cut off
(one HGET), and the batch, still in flight, is written again. SIGHUP reopens the file (for logrotate). A full disk is
waited out: the partial write is cut off and the batch retried, never acknowledged half-written.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.client import Pipeline

from pipeline.config import Config, ProgramConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.core.logsetup import safe
from pipeline.core.message import Item
from pipeline.core.queue import Consumer, Delivery, Outcome
from pipeline.core.retry import Retry
from pipeline.core.worker import Handler, run_consumer
from pipeline.registry import Component, Section, resolve_paths


@dataclass(frozen=True)
class FileLoggerOptions:
    listento: str = option(dt.name, "queue the items come from")
    logfile: str = option(dt.nonempty, "file the items are appended to")
    format: str = option(dt.choice("raw", "ndjson"), "raw: the log line; ndjson: the whole item", "raw")
    fsync: bool = option(dt.boolean, "fsync the file before a batch is acknowledged", True)

log = logging.getLogger(__name__)


def render(items: Iterable[Item], fmt: str) -> bytes:
    out = bytearray()
    for item in items:
        if fmt == "ndjson":
            out += orjson.dumps(item)
        elif "raw_b64" in item:
            out += base64.b64decode(item["raw_b64"])
        elif isinstance(item.get("logline"), str):
            out += item["logline"].replace("\n", "\\n").encode("utf-8", "surrogateescape")
        else:
            out += orjson.dumps(item)
        out += b"\n"
    return bytes(out)


class FileLog:
    def __init__(self, name: str, opts: FileLoggerOptions, client: redis.Redis, keys: Keys) -> None:
        self.name, self.opts, self.client = name, opts, client
        self.state_key, self.path = keys.filelog(name), opts.logfile
        self.fd = -1

    def open(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def committed(self) -> dict[str, Any] | None:
        raw = self.client.hget(self.state_key, self.path)
        return orjson.loads(raw) if raw else None

    def trim(self) -> None:
        """Cut off what was written but never acknowledged (a crash, a lost reply)."""
        if self.fd < 0:
            self.open()
        st, saved = os.fstat(self.fd), self.committed()
        if saved and saved["ino"] == st.st_ino and st.st_size > saved["size"]:
            log.warning("%s: removing %d bytes of an unacknowledged batch from %s",
                        self.name, st.st_size - saved["size"], safe(self.path))
            os.ftruncate(self.fd, saved["size"])

    def write(self, data: bytes) -> dict[str, int]:
        """Append ``data`` whole or not at all; the state to commit with the acknowledgement."""
        start = os.fstat(self.fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            if self.opts.fsync:
                os.fsync(self.fd)
        except OSError:
            os.ftruncate(self.fd, start)
            raise
        st = os.fstat(self.fd)
        return {"ino": st.st_ino, "size": st.st_size}

    def save(self, pipe: Pipeline, state: dict[str, int]) -> None:
        pipe.hset(self.state_key, self.path, orjson.dumps(state))


def run(cfg: Config, program: ProgramConfig[FileLoggerOptions], flags: Flags) -> int:
    opts: FileLoggerOptions = program.options

    def make_handler(consumer: Consumer, flags: Flags) -> Handler:
        filelog = FileLog(program.name, opts, consumer.client, consumer.keys)
        retry = Retry(program.name, flags, base=0.5, cap=30.0)

        def handle(delivery: Delivery) -> Outcome:
            if flags.reopen:
                flags.reopen = False
                filelog.open()
                log.info("%s: reopened %s", program.name, safe(opts.logfile))
            filelog.trim()
            data = render(delivery.items or (), opts.format)
            while True:
                try:
                    state = filelog.write(data)
                    break
                except OSError as exc:
                    retry.failed(f"cannot write {opts.logfile}: {exc}")
            retry.succeeded()
            return Outcome(count=len(delivery.items or ()), extra=lambda p: filelog.save(p, state))

        return handle

    return run_consumer(cfg, program, opts.listento, make_handler, flags)


def prepare(values: dict[str, Any], section: Section) -> dict[str, Any]:
    resolve_paths(values, section, "logfile")
    return values


COMPONENT = Component(
    "filelogger", "appends items to a file, exactly once", FileLoggerOptions, run,
    single_process=True, reads=("listento",), original_command="logfromqueue.py", prepare=prepare)
