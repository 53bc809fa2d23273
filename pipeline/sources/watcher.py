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
import resource
import stat
import time
from dataclasses import dataclass, replace
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
from pipeline.sources.fileid import FileState, file_key, find_by_inode, new_state, same_file
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

READ_BUDGET = 1024 * 1024
TRUNCATED_KEPT = 16
FD_RESERVE = 64  # descriptors kept free for Redis connections, logs and the rest
BATCHES_PER_COMMIT = 8  # when catching up, up to this many full batches share one transaction


class Watcher:
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
        self.truncated_key = keys.truncated(state_name or name)
        self.tails: dict[str, Tail] = {}
        self.saved: dict[str, FileState] = {}
        self.first_pending_at: float | None = None
        self.rescan_needed = False
        self.truncated: list[FileState] = []  # files truncated lately, where they ended
        self.idle: dict[str, tuple[str, int]] = {}  # closed for want of descriptors: key -> (path, size)
        self._warned: set[str] = set()  # paths already warned about (once each)
        self._matched: set[str] = set()  # logfile patterns that matched a file once
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        room = soft - FD_RESERVE if soft != resource.RLIM_INFINITY else opts.max_open_files
        self.max_open = max(8, min(opts.max_open_files, room))
        self.stats = Stats(client, keys, name)
        self.lines_pushed = 0
        self._refused: set[str] = set()

    # -- files -------------------------------------------------------------------------

    def load_state(self) -> None:
        for warning in check_server(self.client):
            log.warning("%s: %s", self.name, warning)
        self.saved = {
            k.decode(): FileState.loads(v) for k, v in self.client.hgetall(self.offsets_key).items()
        }
        self.truncated = [FileState.loads(v) for v in self.client.lrange(self.truncated_key, 0, -1)]

    def rescan(self, first: bool = False) -> None:
        found: dict[str, str] = {}
        sizes: dict[str, int] = {}
        complete = True  # every folder could be read: what is not found is gone
        for pattern in self.opts.logfile:
            folder = os.path.dirname(pattern) or "."
            if not glob.has_magic(folder):
                try:
                    os.listdir(folder)  # glob hides errors (EMFILE, EACCES) as "no such file"
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    complete = False
                    self._warn_once(f"scan:{folder}", "%s: cannot read the folder %s: %s; files "
                                    "there are not taken for rotated away", safe(folder), exc)
                    continue
            matches = sorted(glob.glob(pattern))
            if matches:
                self._matched.add(pattern)
            elif pattern not in self._matched:
                self._warn_once(f"wait:{pattern}", "waiting for %s: no file matches it yet",
                                safe(pattern))
            for path in matches:
                if not self._allowed(path):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    key = file_key(st.st_dev, st.st_ino)
                    if found.setdefault(key, path) == path:
                        sizes[key] = st.st_size
        # files seen before first: one truncated while the watcher was down is then known as
        # truncated before a copy of it (copytruncate) is looked at
        for key, path in sorted(found.items(), key=lambda kv: kv[0] not in self.saved):
            tail = self.tails.get(key)
            if tail is None:
                if key in self.idle and self.idle[key][1] == sizes[key]:
                    continue  # closed while idle, and still as it was
                if self._room():
                    self.idle.pop(key, None)
                    self._open(path, first)
            else:
                tail.path, tail.orphan_since = path, None
                self._check_truncation(tail)
        now = time.monotonic()
        if complete:
            for key, tail in self.tails.items():
                if key not in found and tail.orphan_since is None:
                    tail.orphan_since = now
                    log.info("%s: %s was rotated away; finishing it", self.name, safe(tail.path))
            for key in [k for k in self.idle if k not in found]:
                path = self.idle.pop(key)[0]  # rotated away while closed: find it and finish it
                self._resume_rotated({key: path})
        if first:
            self._resume_rotated_while_stopped(found)

    def _room(self) -> bool:
        """Whether one more file may be opened, closing the longest idle one if needed."""
        if len(self.tails) < self.max_open:
            return True
        idle = [t for t in self.tails.values()
                if not t.pending and not t.buf and t.skip is None and t.orphan_since is None
                and not t.waiting_for and t.pos == t.state.offset]
        if not idle:
            self._warn_once("max_open", "%s files are open (max_open_files, or the descriptor "
                            "limit): the next files wait until one is finished", len(self.tails))
            return False
        tail = min(idle, key=lambda t: t.last_growth)
        self.saved[tail.key] = tail.state  # reopened by identity, from where it was
        self.idle[tail.key] = (tail.path, tail.pos)
        tail.close()
        del self.tails[tail.key]
        return True

    def _warn_once(self, what: str, text: str, *args: object) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("%s: " + text, self.name, *args)

    def _open_file(self, path: str) -> int | None:
        """A descriptor on ``path`` when it is a regular file inside the allowed roots: decided
        on the descriptor, not the name (a name swapped for a symlink or a FIFO between a check
        and the open cannot slip through, and a FIFO cannot hang the open)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self._warn_once(f"open:{path}", "cannot open %s: %s", safe(path), exc)
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self._warn_once(f"kind:{path}", "not reading %s: not a regular file", safe(path))
            return None
        if self.opts.allowed_roots:
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                real = os.path.realpath(path)
            if not self._inside_roots(real):
                os.close(fd)
                self._warn_once(f"root:{path}", "not following %s: it is %s, outside allowed_roots",
                                safe(path), safe(real))
                return None
        return fd

    def _inside_roots(self, real: str) -> bool:
        return any(real == os.path.realpath(root) or real.startswith(os.path.realpath(root).rstrip("/") + "/")
                   for root in self.opts.allowed_roots)

    def _allowed(self, path: str) -> bool:
        """A first look by name (the open decides on the descriptor)."""
        if not self.opts.allowed_roots:
            return True
        try:
            real = os.path.realpath(path)
        except OSError:  # changing under our feet: look again at the next rescan
            return False
        if self._inside_roots(real):
            return True
        self._warn_once(f"root:{path}", "not following %s: it resolves to %s, outside allowed_roots",
                        safe(path), safe(real))
        return False

    def _open(self, path: str, first: bool) -> None:
        opened = self._open_file(path)
        if opened is None:
            return
        fd = opened
        st = os.fstat(fd)
        key = file_key(st.st_dev, st.st_ino)
        state = self.saved.get(key)
        waiting_for = ""
        if state is not None and same_file(fd, state):
            if st.st_size < state.offset:
                log.warning("%s: %s is shorter (%d) than the saved offset %d: truncated while "
                            "stopped, reading from 0", self.name, safe(path), st.st_size, state.offset)
                self._remember_truncated(state)
                state = new_state(path, fd, 0)
        else:
            if state is not None:
                log.warning("%s: %s reuses the inode of a file seen before but its content differs "
                            "(truncated and written again while the watcher was stopped, or a new "
                            "file); reading it as a new file", self.name, safe(path))
                self._remember_truncated(state)  # its old content may turn up as a copy
                if not state.closed:
                    self._report_gap(state)
            source = self._copied_from(fd, st.st_size, key)
            if isinstance(source, Tail):
                # a copy of a file being tailed (copytruncate between its two steps): read it
                # from where that file ends up once it is truncated, not before
                waiting_for = source.key
                state = replace(source.state, path=path, dev=st.st_dev, ino=st.st_ino)
                log.info("%s: %s is a copy of %s; it is read once that file is truncated",
                         self.name, safe(path), safe(source.path))
            elif source is not None:
                state = replace(source, path=path, dev=st.st_dev, ino=st.st_ino, closed=False)
                log.info("%s: %s is a copy of a file truncated at offset %d (copytruncate): "
                         "reading it from there", self.name, safe(path), state.offset)
            else:
                start = st.st_size if (first and self.opts.start == "end") else 0
                state = new_state(path, fd, start)
        tail = Tail(path, fd, state, self.opts.servicename, self.opts.max_line_bytes)
        self.tails[key] = tail
        if waiting_for:
            tail.waiting_for = waiting_for
            return  # known once released
        if self.saved.pop(key, None) != state:
            # Known from now on: should it be rotated away and the watcher die before it
            # commits a line of it, the next start still finds it by inode and reads it.
            self.client.hset(self.offsets_key, key, state.dumps())
        log.info("%s: tailing %s from offset %d", self.name, safe(path), state.offset)

    def _copied_from(self, fd: int, size: int, key: str) -> Tail | FileState | None:
        """The file (a tail being read, or one truncated since) whose content this new file
        starts with, as copytruncate's copy does: same first bytes, at least as long."""
        for tail in self.tails.values():
            if tail.key != key and not tail.waiting_for and _starts_as(fd, size, tail.identity()):
                return tail
        for state in reversed(self.truncated):
            if _starts_as(fd, size, state):
                return state
        return None

    def _remember_truncated(self, state: FileState) -> None:
        """A file was truncated at ``state``: a copy of it that turns up (copytruncate) goes on
        from there, under the same source id, so no line of it is read twice."""
        self.truncated = [*self.truncated[-(TRUNCATED_KEPT - 1):], state]
        with self.client.pipeline(transaction=True) as pipe:  # a crash must not forget it
            pipe.rpush(self.truncated_key, state.dumps())
            pipe.ltrim(self.truncated_key, -TRUNCATED_KEPT, -1)
            pipe.execute()
        for tail in self.tails.values():
            if tail.waiting_for == state.key:
                self._release(tail, state)

    def _release(self, tail: Tail, state: FileState) -> None:
        released = replace(state, path=tail.path, dev=tail.state.dev, ino=tail.state.ino, closed=False)
        tail.waiting_for = ""
        tail.rewind(released)
        self.client.hset(self.offsets_key, tail.key, released.dumps())
        log.info("%s: reading the copy %s from offset %d", self.name, safe(tail.path), released.offset)

    def _check_truncation(self, tail: Tail) -> None:
        size = os.fstat(tail.fd).st_size
        if size < tail.pos or not same_file(tail.fd, tail.identity()):
            log.warning("%s: %s was truncated (size %d < offset %d) or rewritten; reading from 0",
                        self.name, safe(tail.path), size, tail.pos)
            self._commit_pending(tail)
            self._remember_truncated(tail.identity())
            tail.rewind(new_state(tail.path, tail.fd, 0))
            self.client.hset(self.offsets_key, tail.key, tail.state.dumps())

    def _resume_rotated_while_stopped(self, found: dict[str, str]) -> None:
        self._resume_rotated({k: s.path for k, s in self.saved.items() if k not in found and k not in self.tails})

    def _resume_rotated(self, known: dict[str, str]) -> None:
        """Files known by identity but not at their path any more: find each one's inode in its
        folder and finish it from its saved offset, or report the gap."""
        for key, last_path in known.items():
            state = self.saved.get(key)
            if state is None:
                continue
            path = find_by_inode(os.path.dirname(last_path) or ".", state.dev, state.ino)
            fd = self._open_file(path) if path else None
            if fd is not None and same_file(fd, state):
                tail = Tail(path or state.path, fd, state, self.opts.servicename, self.opts.max_line_bytes)
                tail.orphan_since = time.monotonic()
                self.tails[key] = tail
                log.info("%s: %s was rotated to %s; finishing it from offset %d",
                         self.name, safe(state.path), safe(path), state.offset)
                del self.saved[key]
                continue
            if fd is not None:
                os.close(fd)
            self.client.hdel(self.offsets_key, key)
            del self.saved[key]
            if not state.closed:  # finished before it went away: nothing was missed
                self._report_gap(state)

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

    def _report_gap(self, state: FileState) -> None:
        log.error("%s: GAP: %s (inode %d) is gone; lines written to it after offset %d "
                  "while the watcher was stopped cannot be read", self.name,
                  safe(state.path), state.ino, state.offset)

    # -- batches ---------------------------------------------------------------------------

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

    @staticmethod
    def _still_at_path(tail: Tail) -> bool:
        try:
            st = os.stat(tail.path)
        except OSError:
            return False
        return file_key(st.st_dev, st.st_ino) == tail.key

    def _ordered(self) -> list[Tail]:
        """Rotated-away files first: their lines are older than the new file's."""
        return sorted(self.tails.values(), key=lambda t: t.orphan_since is None)

    def pump(self) -> int:
        """Read what is there and commit full batches; bytes read."""
        total = 0
        group = self.opts.batch_lines * BATCHES_PER_COMMIT
        group_bytes = self.opts.batch_bytes * BATCHES_PER_COMMIT  # memory and transaction bound
        for tail in self._ordered():
            if tail.waiting_for:
                continue  # a copy, read once its original is truncated
            self._check_truncation(tail)
            dry = False
            while tail.pending < group and tail.pending_bytes < group_bytes:
                got = tail.read(READ_BUDGET)
                total += got
                if not got:
                    dry = True
                    if tail.orphan_since is None and not self._still_at_path(tail):
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
            parts = [(t, t.pending) for t in self._ordered() if t.pending]
            if parts:
                self._commit(parts)
            self.first_pending_at = None

    def close_finished(self) -> None:
        now = time.monotonic()
        for key, tail in list(self.tails.items()):
            if tail.waiting_for or tail.orphan_since is None or \
                    now - max(tail.orphan_since, tail.last_growth) < self.opts.close_after_s:
                continue
            if tail.read(READ_BUDGET):
                continue
            tail.flush_partial()
            if not self._commit_pending(tail):
                continue  # Redis knew other offsets: read what it lacks again first
            tail.state = replace(tail.state, offset=tail.pos, closed=True)
            self.client.hset(self.offsets_key, key, tail.state.dumps())
            self.saved[key] = tail.state  # should a glob match it again, it resumes at its end
            tail.close()
            del self.tails[key]
            log.info("%s: finished rotated file %s at offset %d", self.name, safe(tail.path), tail.pos)
            for copy in self.tails.values():
                if copy.waiting_for == key:  # its original went away whole: go on from its end
                    self._release(copy, tail.state)

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


def _starts_as(fd: int, size: int, state: FileState) -> bool:
    """Whether the open file begins with the bytes ``state`` was fingerprinted on and reaches
    its offset."""
    return state.fplen > 0 and size >= state.offset and same_file(fd, state)


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
