"""The file logger: appends items to a file, exactly once.

Each batch is written, flushed and (by default) fsynced before its acknowledgement; the same
transaction that acknowledges it saves the file's new size. At start, bytes past the saved size
belong to a batch that was written but never acknowledged: before each batch they are cut off
(one HGET), and the batch, still in flight, is written again. SIGHUP reopens the file (for logrotate). A full disk is
waited out: the partial write is cut off and the batch retried, never acknowledged half-written.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from pipeline.config import Config, ProgramConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core import message
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags
from pipeline.core.logsetup import safe
from pipeline.core.message import Item
from pipeline.core.queue import Consumer, Delivery, Outcome
from pipeline.core.retry import Retry
from pipeline.core.worker import Handler, run_consumer
from pipeline.errors import LoglinesError
from pipeline.registry import Component, Section, resolve_paths


@dataclass(frozen=True)
class FileLoggerOptions:
    listento: str = option(dt.name, "queue the items come from")
    logfile: str = option(dt.nonempty, "file the items are appended to")
    format: str = option(dt.choice("raw", "ndjson"), "raw: the log line; ndjson: the whole item", "raw")
    fsync: bool = option(dt.boolean, "fsync the file before a batch is acknowledged", True)

log = logging.getLogger(__name__)


def render(items: Iterable[Item], fmt: str) -> tuple[bytes, list[tuple[Item, str]]]:
    """The bytes to append for ``items``, and the items that cannot be written (with why).

    ``raw`` writes the log line as it was in its file: the exact bytes of ``raw_b64`` when they
    are the one line that ``logline`` shows (what the watcher carries for bytes that are not
    UTF-8), else the ``logline`` text with any newline escaped, so that no item can forge a
    second line."""
    out = bytearray()
    bad: list[tuple[Item, str]] = []
    for item in items:
        if fmt == "ndjson":
            try:
                out += orjson.dumps(item)
            except (orjson.JSONEncodeError, TypeError) as exc:
                bad.append((item, f"cannot be encoded as JSON: {exc}"))
                continue
        else:
            line = item.get("logline")
            exact = _exact_bytes(item, line) if "raw_b64" in item else None
            if exact is not None:
                out += exact
            elif isinstance(line, str):
                out += line.replace("\n", "\\n").encode("utf-8", "surrogateescape")
            else:
                try:
                    out += orjson.dumps(item)
                except (orjson.JSONEncodeError, TypeError) as exc:
                    bad.append((item, f"has no logline and cannot be encoded as JSON: {exc}"))
                    continue
        out += b"\n"
    return bytes(out), bad


def _exact_bytes(item: Item, line: object) -> bytes | None:
    """``raw_b64`` decoded, when it is one line that reads as ``logline``."""
    encoded = item.get("raw_b64")
    if not isinstance(encoded, str) or not isinstance(line, str):
        return None
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, TypeError):
        return None
    if b"\n" in raw or raw.decode("utf-8", "backslashreplace") != line:
        return None
    return raw


TAIL_BYTES = 64  # the last bytes of what was acknowledged, to recognise the file after a rotation


class FileLog:
    """One output file: written whole or not at all, locked against a second writer, cut back
    to what was acknowledged before a batch is written again."""

    def __init__(self, name: str, opts: FileLoggerOptions, client: redis.Redis, keys: Keys) -> None:
        self.name, self.opts, self.client = name, opts, client
        # per host: the same section on two machines writes two local files
        self.state_key, self.path = keys.filelog(f"{socket.gethostname()}/{name}"), opts.logfile
        self.old_state_key = keys.filelog(name)  # before the host was part of the key
        self.fd = -1

    def open(self) -> None:
        """(Re)open the file at our path, and lock it: a second writer would cut our lines."""
        if self.fd >= 0:
            os.close(self.fd)  # our lock on the old file goes with it
            self.fd = -1
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LoglinesError(f"{self.name}: another process writes {self.path} (it holds the "
                                "file's lock): two file loggers would cut each other's lines") from None
        self.fd = fd

    def committed(self) -> dict[str, Any] | None:
        raw = self.client.hget(self.state_key, self.path) or self.client.hget(self.old_state_key, self.path)
        return orjson.loads(raw) if raw else None

    def trim(self) -> None:
        """Cut off what was written but never acknowledged (a crash, a lost reply), in the file
        it was written to: the one at our path, or the one logrotate renamed it to, or the copy
        copytruncate made of it."""
        if self.fd < 0:
            self.open()
        st, saved = os.fstat(self.fd), self.committed()
        if not saved:
            return
        if saved["ino"] == st.st_ino and st.st_size > saved["size"]:
            self._cut(self.fd, self.path, st.st_size, saved["size"])
            return
        if saved["ino"] == st.st_ino and st.st_size >= saved["size"]:
            return
        for path in self._rotated(saved, st.st_ino):
            fd = os.open(path, os.O_RDWR)
            try:
                size = os.fstat(fd).st_size
                if size > saved["size"] and _tail(fd, saved["size"]) == saved.get("tail", _tail(fd, saved["size"])):
                    self._cut(fd, path, size, saved["size"])
            finally:
                os.close(fd)

    def _rotated(self, saved: dict[str, Any], current_ino: int) -> list[str]:
        """Where the acknowledged file went: renamed (same inode), or copied (another file of
        the folder named like ours, at least as long, ending the acknowledged part the same)."""
        folder, base = os.path.dirname(self.path) or ".", os.path.basename(self.path)
        found = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.is_file(follow_symlinks=False) or entry.path == self.path:
                        continue
                    if entry.inode() == saved["ino"] and saved["ino"] != current_ino:
                        return [entry.path]
                    if entry.name.startswith(base) and not entry.name.endswith((".gz", ".bz2", ".xz", ".zst")):
                        found.append(entry.path)
        except OSError:
            return []
        return found if "tail" in saved else []

    def _cut(self, fd: int, path: str, size: int, keep: int) -> None:
        log.warning("%s: removing %d bytes of an unacknowledged batch from %s", self.name,
                    size - keep, safe(path))
        os.ftruncate(fd, keep)

    def write(self, data: bytes) -> dict[str, Any]:
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
        return {"ino": st.st_ino, "size": st.st_size, "tail": _tail(self.fd, st.st_size)}

    def saved(self, state: dict[str, Any]) -> tuple[str, str, bytes]:
        """The hash field that records ``state``, set in the acknowledgement of what it covers."""
        return self.state_key, self.path, orjson.dumps(state)


def _tail(fd: int, end: int) -> str:
    """A fingerprint of the bytes just before ``end``."""
    start = max(0, end - TAIL_BYTES)
    return hashlib.sha1(os.pread(fd, end - start, start)).hexdigest()


def run(cfg: Config, program: ProgramConfig[FileLoggerOptions], flags: Flags) -> int:
    opts: FileLoggerOptions = program.options

    def make_handler(consumer: Consumer, flags: Flags) -> Handler:
        filelog = FileLog(program.name, opts, consumer.client, consumer.keys)
        filelog.open()  # at start: a file another process writes stops this one here, saying so
        retry = Retry(program.name, flags, base=0.5, cap=30.0)

        def handle(delivery: Delivery) -> Outcome:
            if flags.reopen:
                flags.reopen = False
                filelog.open()
                log.info("%s: reopened %s", program.name, safe(opts.logfile))
            filelog.trim()
            data, bad = render(delivery.items or (), opts.format)
            dead = [message.dead_letter(reason=f"the item {why}", worker=consumer.id,
                                        queue=opts.listento, item=item) for item, why in bad]
            while True:
                try:
                    state = filelog.write(data)
                    break
                except OSError as exc:
                    retry.failed(f"cannot write {opts.logfile}: {exc}")
            retry.succeeded()
            return Outcome(dead=dead, count=len(delivery.items or ()), out=len(delivery.items or ()) - len(bad),
                           sets=[filelog.saved(state)])

        return handle

    return run_consumer(cfg, program, opts.listento, make_handler, flags)


def prepare(values: dict[str, Any], section: Section) -> dict[str, Any]:
    resolve_paths(values, section, "logfile")
    return values


COMPONENT = Component(
    "filelogger", "appends items to a file, exactly once", FileLoggerOptions, run,
    single_process=True, reads=("listento",), original_command="logfromqueue.py", prepare=prepare,
    exclusive=("logfile",))
