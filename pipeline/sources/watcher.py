"""The file watcher: tails log files into a Redis queue, exactly once.

Each batch is pushed in the same MULTI/EXEC that saves the position past its last line, so a
line is in the queue if and only if the saved offset is past it: after ``kill -9`` the watcher
resumes right after the last pushed line. Rotation is followed by file identity (device, inode
and a fingerprint of the first bytes), whether it happens while running or while stopped.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.config import Config, ProgramConfig, RedisConfig
from pipeline.config import datatypes as dt
from pipeline.config.options import key as option
from pipeline.core import failpoint
from pipeline.core.connection import REDIS_ERRORS, check_server, connect, wait_replicas
from pipeline.core.keys import Keys
from pipeline.core.lifecycle import Flags, Watchdog, turned
from pipeline.core.logsetup import safe
from pipeline.core.retry import Outage
from pipeline.core.stats import Stats
from pipeline.registry import Component, Section, resolve_paths
from pipeline.sources import files as files_mod
from pipeline.sources.fileid import FileState, find_by_inode
from pipeline.sources.tailer import Tail


@dataclass(frozen=True)
class WatcherOptions:
    logfile: tuple[str, ...] = option(dt.string_list, "file(s) to tail; globs allowed, comma-separated")
    pushto: str = option(dt.name, "queue the lines are pushed to")
    servicename: str = option(dt.nonempty, "service name put on every line", "")
    batch_lines: int = option(dt.integer(1, 100_000), "lines per batch at most", 500)
    batch_ms: int = option(dt.integer(1, 60_000), "milliseconds a batch may wait to fill while its file "
                           "keeps growing (a batch goes out at once when the file has no more)", 200)
    max_line_bytes: int = option(dt.byte_size, "longer lines are truncated and flagged", 1024 * 1024)
    batch_bytes: int = option(dt.byte_size, "bytes per message at most (a longer line goes alone)",
                              512 * 1024)
    start: str = option(dt.choice("beginning", "end"), "where to start in a file never seen", "beginning")
    poll_ms: int = option(dt.integer(10, 10_000), "how often files are checked for growth", 100)
    rescan_ms: int = option(dt.integer(100, 600_000), "how often globs and rotation are checked", 1000)
    close_after_s: float = option(dt.number(0), "a rotated-away file is closed this long after EOF", 5.0)
    max_open_files: int = option(dt.integer(8, 1_000_000), "files kept open at most; idle ones are "
                                 "closed and reopened by identity when they grow", 512)
    allowed_roots: tuple[str, ...] = option(
        dt.string_list, "directories a watched path (after symlinks) must lie in; empty: any", ()
    )

log = logging.getLogger(__name__)

BATCHES_PER_COMMIT = 8  # when catching up, up to this many full batches share one transaction


class Watcher:
    """Reads the files (:class:`~pipeline.sources.files.Files` knows which, and from where) and
    commits their lines with their offsets."""

    def __init__(
        self,
        name: str,
        opts: WatcherOptions,
        client: redis.Redis,
        keys: Keys,
        flags: Flags,
        state_name: str | None = None,
        rcfg: RedisConfig | None = None,
    ) -> None:
        self.name, self.opts, self.client, self.keys, self.flags = name, opts, client, keys, flags
        self.rcfg = rcfg or RedisConfig()
        self.queue_key = keys.queue(opts.pushto)
        self.offsets_key = keys.offsets(state_name or name)
        self.files = files_mod.Files(name, opts, client, self.offsets_key,
                                     keys.truncated(state_name or name), self._commit_pending)
        self.tails = self.files.tails  # the same dict, never replaced
        self.first_pending_at: float | None = None
        self.rescan_needed = False
        self.stats = Stats(client, keys, name)
        self.lines_pushed = 0

    def load_state(self) -> None:
        for warning in check_server(self.client):
            log.warning("%s: %s", self.name, warning)
        self.files.load()

    def rescan(self, first: bool = False) -> None:
        self.files.rescan(first)

    def close_finished(self) -> None:
        self.files.close_finished()

    def resync(self) -> None:
        """Believe Redis over memory. If it came back without writes it had acknowledged
        (restarted from an older append-only file or snapshot, a failover to a lagging replica),
        those lines left the queue with the offsets: read them again. If a commit went through
        but its reply was lost, its lines are in the queue: go on after them (the lines read
        meanwhile are read again, so the next commit cannot repeat it). When Redis holds another
        version of the file (it forgot that the file was truncated and read again from 0), the
        version this process reads was never committed: read it again from where this process
        began it."""
        saved = {k.decode(): FileState.loads(v) for k, v in self.client.hgetall(self.offsets_key).items()}
        for key, tail in self.tails.items():
            if tail.waiting_for:
                continue
            state = saved.get(key)
            if state is None or state.sid != tail.state.sid:
                state = tail.origin  # Redis forgot this version of the file: from our start of it
                self.client.hset(self.offsets_key, key, state.dumps())
            if state.sid != tail.state.sid or state.offset == tail.state.offset:
                continue
            if state.offset < tail.state.offset:
                log.warning("%s: Redis lost the position of %s (%d, memory says %d): reading "
                            "from %d again", self.name, safe(tail.path), state.offset,
                            tail.state.offset, state.offset)
            else:
                log.info("%s: the last commit of %s had gone through before the connection was "
                         "lost; going on from %d", self.name, safe(tail.path), state.offset)
            tail.rewind(state)
        if not any(t.pending for t in self.tails.values()):
            self.first_pending_at = None

    def _commit(self, parts: list[tuple[Tail, int]]) -> bool:
        """Push the first ``n`` pending lines of each tail and save their offsets, atomically,
        if Redis still holds the offsets this process last committed; False (after following
        Redis) when it does not.

        The check is what makes a Redis that forgot acknowledged writes harmless even when no
        error ever reached the watcher: restarted from an older snapshot or append-only file, or
        a failover to a lagging replica, behind a silently reconnecting client. It also tells
        when a commit whose reply was lost had gone through. The lines go out as messages of at
        most ``batch_lines`` items and ``batch_bytes`` bytes; when the watcher is catching up,
        several such messages share one transaction.
        """
        failpoint.hit("taken")
        messages: list[bytes] = []
        states = {}
        count = 0
        for tail, n in parts:
            batch, end = tail.messages(n, self.opts.batch_lines, self.opts.batch_bytes)
            messages.extend(batch)
            count += n
            states[tail.key] = tail.identity().advanced(tail.fd, end)
        believed = {tail.key: tail.state for tail, _ in parts}
        started = time.monotonic()
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.watch(self.offsets_key)
                saved = pipe.hmget(self.offsets_key, list(states))
                if not all(_holds(raw, believed[k]) for raw, k in zip(saved, states, strict=True)):
                    raise redis.WatchError("the saved offsets are not the ones last committed")
                pipe.multi()
                pipe.rpush(self.queue_key, *messages)
                pipe.hset(self.offsets_key, mapping={k: s.dumps() for k, s in states.items()})
                pipe.execute()
        except redis.WatchError:
            self.resync()
            return False
        wait_replicas(self.client, self.rcfg)  # raises (the run loop waits) until replicated
        self.lines_pushed += count
        self.stats.add(count)
        self.stats.count("items_out", count)  # a watcher's lines in are its lines out
        self.stats.observe("batch_seconds", time.monotonic() - started)
        self._done(parts, states)
        return True

    def _done(self, parts: list[tuple[Tail, int]], states: dict[str, FileState]) -> None:
        for tail, n in parts:
            tail.drop(n, states[tail.key].offset)
            tail.state = states[tail.key]
        if not any(t.pending for t in self.tails.values()):
            self.first_pending_at = None

    def _commit_pending(self, tail: Tail) -> bool:
        """Commit what is pending of one file; False if Redis held other offsets (followed)."""
        return self._commit([(tail, tail.pending)]) if tail.pending else True

    def pump(self) -> int:
        """Read what is there and commit full batches; bytes read."""
        total = 0
        group = self.opts.batch_lines * BATCHES_PER_COMMIT
        group_bytes = self.opts.batch_bytes * BATCHES_PER_COMMIT  # memory and transaction bound
        for tail in self.files.ordered():
            if tail.waiting_for:
                continue  # a copy, read once its original is truncated
            self.files.check_truncation(tail)
            dry = False
            while tail.pending < group and tail.pending_bytes < group_bytes:
                got = tail.read(files_mod.READ_BUDGET)
                total += got
                if not got:
                    dry = True
                    if tail.orphan_since is None and not self.files.still_at_path(tail):
                        self.rescan_needed = True  # rotated: do not wait for the next rescan
                    break
            if tail.pending and self.first_pending_at is None:
                self.first_pending_at = time.monotonic()
            full = tail.pending - tail.pending % self.opts.batch_lines
            if tail.pending_bytes >= group_bytes or dry:
                full = tail.pending  # a full group, or all there is: nothing gains by waiting
            if full:
                self._commit([(tail, full)])
        return total

    def flush_due(self, force: bool = False) -> None:
        if self.first_pending_at is None:
            return
        if force or (time.monotonic() - self.first_pending_at) * 1000 >= self.opts.batch_ms:
            parts = [(t, t.pending) for t in self.files.ordered() if t.pending]
            if parts:
                self._commit(parts)
            self.first_pending_at = None

    def run(self, watchdog_s: int = 120) -> int:
        outage = Outage(self.name, self.flags, self.client)
        heartbeat = self.keys.heartbeat(self.name)
        watchdog = Watchdog(self.name, watchdog_s, report=lambda at: self.client.set(
            heartbeat, b"%.3f" % at, ex=max(60, watchdog_s)))
        watchdog.start()
        loaded = False
        next_scan = 0.0
        resync = False
        while not self.flags.stop:
            turned()
            try:
                if not loaded:
                    self.load_state()
                    self.rescan(first=True)
                    loaded = True
                    next_scan = time.monotonic() + self.opts.rescan_ms / 1000
                elif resync:
                    self.resync()
                resync = False
                got = self.pump()
                self.flush_due()
                self.stats.flush()
                if self.rescan_needed or time.monotonic() >= next_scan:
                    self.rescan_needed = False
                    self.rescan()
                    self.close_finished()
                    next_scan = time.monotonic() + self.opts.rescan_ms / 1000
                outage.over()
                if not got:
                    time.sleep(self.opts.poll_ms / 1000)
            except REDIS_ERRORS as exc:
                resync = True
                outage.wait(exc)
        try:
            if loaded:
                if resync:  # what Redis holds decides, on the way out too
                    self.resync()
                    self.pump()  # what resync made us forget is read again
                self.flush_due(force=True)
            self.stats.flush(force=True)
        except REDIS_ERRORS as exc:
            log.warning("%s: could not push the last lines before stopping (%s); they will be "
                        "read again at start", self.name, safe(exc))
        watchdog.done.set()
        for tail in self.tails.values():
            tail.close()
        log.info("%s: stopped after pushing %d lines", self.name, self.lines_pushed)
        return 0


def _holds(raw: bytes | None, state: FileState) -> bool:
    """Whether a saved offset is the position ``state`` says was committed."""
    if raw is None:
        return False
    saved = FileState.loads(raw)
    return saved.sid == state.sid and saved.offset == state.offset


def check(cfg: Config, program: ProgramConfig[WatcherOptions]) -> list[str]:
    """The patterns of ``logfile`` that match no file now (the watcher waits for them)."""
    return [f"[{program.name}] logfile {pattern!r} matches no file yet: the watcher waits for it "
            "(and says so in its log)" for pattern in program.options.logfile if not glob.glob(pattern)]


def status(cfg: Config, program: ProgramConfig[WatcherOptions], client: redis.Redis) -> dict[str, Any]:
    """Each file the watcher reads, with its saved offset, its size here and the bytes still to
    read (``size`` is None for a file this machine cannot see), and the patterns it waits for."""
    keys = Keys(cfg.redis_for(program).prefix)
    files = []
    for raw in client.hgetall(keys.offsets(program.name)).values():
        state = FileState.loads(raw)
        if state.closed:
            continue  # a rotated file read to its end
        size = _size_of(state)
        files.append({"path": state.path, "offset": state.offset, "size": size,
                      "lag": None if size is None else max(0, size - state.offset)})
    return {"files": sorted(files, key=lambda f: str(f["path"])),
            "waiting_for": [p for p in program.options.logfile if not glob.glob(p)]}


def _size_of(state: FileState) -> int | None:
    """The size of the file a state is for: at its path, or renamed in its folder (rotated)."""
    try:
        st = os.stat(state.path)
        if (st.st_dev, st.st_ino) == (state.dev, state.ino):
            return st.st_size
    except OSError:
        pass
    path = find_by_inode(os.path.dirname(state.path) or ".", state.dev, state.ino)
    try:
        return os.stat(path).st_size if path else None
    except OSError:
        return None


def run(cfg: Config, program: ProgramConfig[WatcherOptions], flags: Flags) -> int:
    rcfg = cfg.redis_for(program)
    watcher = Watcher(program.name, program.options, connect(rcfg), Keys(rcfg.prefix), flags, rcfg=rcfg)
    return watcher.run(cfg.watchdog_s)


def prepare(values: dict[str, Any], section: Section) -> dict[str, Any]:
    values["servicename"] = values["servicename"] or section.name.split("_", 1)[-1]
    resolve_paths(values, section, "logfile", "allowed_roots")
    if not values["logfile"]:
        raise section.error("expected at least one file or glob", "logfile", "")
    return values


#: What one line can cost in JSON: six bytes per control byte escaped, plus its exact bytes in
#: base64 when they are not UTF-8.
LINE_EXPANSION = 8


def validate(opts: WatcherOptions, rcfg: RedisConfig, section: Section) -> None:
    """A message the watcher pushes must always fit under the consumers' payload cap."""
    cap = rcfg.max_payload_bytes
    if opts.max_line_bytes * LINE_EXPANSION > cap:
        raise section.error(f"a line of {opts.max_line_bytes} bytes can take {LINE_EXPANSION}x as "
                            f"much in a message, over max_payload_bytes ({cap}) of [{rcfg.name}]: "
                            "lower max_line_bytes or raise max_payload_bytes", "max_line_bytes",
                            section.items.get("max_line_bytes", str(opts.max_line_bytes)))
    if opts.batch_bytes * 2 > cap:
        raise section.error(f"must be at most half of max_payload_bytes ({cap}) of [{rcfg.name}]",
                            "batch_bytes", section.items.get("batch_bytes", str(opts.batch_bytes)))


COMPONENT = Component(
    "watcher", "tails log files into a queue, exactly once, following rotation", WatcherOptions, run,
    single_process=True, writes=("pushto",), original_command="logfilewatcher.py", prepare=prepare,
    validate=validate, check=check, status=status)
