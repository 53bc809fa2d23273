"""The identity of a tailed file, and the position saved for it.

A file is known by device + inode *and* a fingerprint (sha1) of its first bytes, so a new file
that happens to get a recycled inode is never mistaken for the old one. The fingerprint grows
with the file up to ``FP_BYTES``. ``sid`` is the short source id every line of the file carries;
it is fixed the first time the file is seen.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace

import orjson

FP_BYTES = 1024


@dataclass(frozen=True)
class FileState:
    path: str
    dev: int
    ino: int
    sid: str
    fplen: int
    fp: str
    offset: int
    closed: bool = False  # finished after rotation: its end was read

    @property
    def key(self) -> str:
        return file_key(self.dev, self.ino)

    def dumps(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def loads(cls, raw: bytes) -> FileState:
        return cls(**orjson.loads(raw))

    def advanced(self, fd: int, offset: int) -> FileState:
        """This state moved to ``offset``, with the fingerprint grown if the file has (and still
        begins as it did: not over the new content of a file truncated meanwhile)."""
        if self.fplen < FP_BYTES and offset > self.fplen:
            head = os.pread(fd, FP_BYTES, 0)
            if hashlib.sha1(head[: self.fplen]).hexdigest() == self.fp or self.fplen == 0 and head:
                return replace(self, offset=offset, fplen=len(head), fp=hashlib.sha1(head).hexdigest(),
                               closed=False)
        return replace(self, offset=offset, closed=False)


def file_key(dev: int, ino: int) -> str:
    return f"{dev}:{ino}"


def fingerprint(fd: int, length: int = FP_BYTES) -> tuple[int, str]:
    head = os.pread(fd, length, 0)
    return len(head), hashlib.sha1(head).hexdigest()


def same_file(fd: int, state: FileState) -> bool:
    """Whether the open file still starts with the bytes the state was fingerprinted on."""
    if state.fplen == 0:
        return True
    head = os.pread(fd, state.fplen, 0)
    return len(head) == state.fplen and hashlib.sha1(head).hexdigest() == state.fp


def new_state(path: str, fd: int, offset: int = 0) -> FileState:
    st = os.fstat(fd)
    fplen, fp = fingerprint(fd)
    sid = hashlib.sha1(f"{st.st_dev}:{st.st_ino}:{fp}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return FileState(path, st.st_dev, st.st_ino, sid, fplen, fp, offset)


def find_by_inode(directory: str, dev: int, ino: int) -> str | None:
    """A file in ``directory`` with this device and inode (a rotated file under a new name)."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.inode() == ino and entry.is_file(follow_symlinks=False):
                    if entry.stat(follow_symlinks=False).st_dev == dev:
                        return entry.path
    except OSError:
        return None
    return None
