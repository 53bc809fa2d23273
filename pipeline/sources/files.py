"""The files a watcher reads, and from where: found by glob, followed by identity.

A file is known by identity (:mod:`pipeline.sources.fileid`), not by name, so it is followed
through rotation (renamed, then finished from its saved offset), truncation (read again from 0),
copytruncate (the copy goes on from where the original was truncated, under the same source id)
and inode reuse, whether it happens while the watcher runs or while it is stopped. Every change
of what is known is saved in Redis at once, so a crash forgets none of it. Committing lines is
the watcher's (:mod:`pipeline.sources.watcher`): it is passed in as ``commit``.
"""

from __future__ import annotations

import glob
import logging
import os
import resource
import stat
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import redis

from pipeline.core.logsetup import safe
from pipeline.sources.fileid import FileState, file_key, find_by_inode, new_state, same_file
from pipeline.sources.tailer import Tail

if TYPE_CHECKING:
    from pipeline.sources.watcher import WatcherOptions

log = logging.getLogger(__name__)

READ_BUDGET = 1024 * 1024  # bytes read from one file at a time
TRUNCATED_KEPT = 16
FD_RESERVE = 64  # descriptors kept free for Redis connections, logs and the rest


class Files:
    """The open files (``tails``, by identity), the saved positions of those not open
    (``saved``), the files closed for want of descriptors (``idle``) and those truncated lately
    (``truncated``, where they ended). ``commit`` pushes what is pending of a file: False when
    Redis held other offsets (the watcher has followed them)."""

    def __init__(self, name: str, opts: WatcherOptions, client: redis.Redis, offsets_key: str,
                 truncated_key: str, commit: Callable[[Tail], bool]) -> None:
        self.name, self.opts, self.client, self.commit = name, opts, client, commit
        self.offsets_key, self.truncated_key = offsets_key, truncated_key
        self.tails: dict[str, Tail] = {}
        self.saved: dict[str, FileState] = {}
        self.truncated: list[FileState] = []
        self.idle: dict[str, tuple[str, int]] = {}  # key -> (path, size) when it was closed
        self._warned: set[str] = set()  # paths already warned about (once each)
        self._matched: set[str] = set()  # logfile patterns that matched a file once
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        room = soft - FD_RESERVE if soft != resource.RLIM_INFINITY else opts.max_open_files
        self.max_open = max(8, min(opts.max_open_files, room))

    def load(self) -> None:
        """What Redis knows of the files: their saved positions and the files truncated lately."""
        self.saved = {
            k.decode(): FileState.loads(v) for k, v in self.client.hgetall(self.offsets_key).items()
        }
        self.truncated = [FileState.loads(v) for v in self.client.lrange(self.truncated_key, 0, -1)]

    def rescan(self, first: bool = False) -> None:
        """Match the globs again: open new files, notice truncation, and mark the open files no
        longer at any matched path as rotated away (finished, then closed). At the first scan,
        files known from before but gone from their paths are looked for by inode."""
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
                    self._warn_once(f"scan:{folder}", "cannot read the folder %s: %s; files there "
                                    "are not taken for rotated away", safe(folder), exc)
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
                self.check_truncation(tail)
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

    def check_truncation(self, tail: Tail) -> None:
        size = os.fstat(tail.fd).st_size
        if size < tail.pos or not same_file(tail.fd, tail.identity()):
            log.warning("%s: %s was truncated (size %d < offset %d) or rewritten; reading from 0",
                        self.name, safe(tail.path), size, tail.pos)
            self.commit(tail)
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

    def _report_gap(self, state: FileState) -> None:
        log.error("%s: GAP: %s (inode %d) is gone; lines written to it after offset %d "
                  "while the watcher was stopped cannot be read", self.name,
                  safe(state.path), state.ino, state.offset)

    @staticmethod
    def still_at_path(tail: Tail) -> bool:
        try:
            st = os.stat(tail.path)
        except OSError:
            return False
        return file_key(st.st_dev, st.st_ino) == tail.key

    def ordered(self) -> list[Tail]:
        """Rotated-away files first: their lines are older than the new file's."""
        return sorted(self.tails.values(), key=lambda t: t.orphan_since is None)

    def close_finished(self) -> None:
        """Close the rotated-away files that stopped growing ``close_after_s`` ago, once what
        they hold is committed; a copy waiting for one of them goes on from its end."""
        now = time.monotonic()
        for key, tail in list(self.tails.items()):
            if tail.waiting_for or tail.orphan_since is None or \
                    now - max(tail.orphan_since, tail.last_growth) < self.opts.close_after_s:
                continue
            if tail.read(READ_BUDGET):
                continue
            tail.flush_partial()
            if not self.commit(tail):
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


def _starts_as(fd: int, size: int, state: FileState) -> bool:
    """Whether the open file begins with the bytes ``state`` was fingerprinted on and reaches
    its offset."""
    return state.fplen > 0 and size >= state.offset and same_file(fd, state)
