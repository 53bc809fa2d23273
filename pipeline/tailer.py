"""Reading complete lines from one open file, with the byte offset of each.

A partial last line waits in memory until its newline arrives. A line longer than
``max_line_bytes`` keeps only its head: the rest is skipped as it is read (memory stays
bounded), and when its newline comes the head is emitted with ``trunc`` = the full length.
Bytes that are not UTF-8 are carried twice: escaped in ``logline`` (readable for plugins)
and exactly, base64-encoded, in ``raw_b64``.
"""

from __future__ import annotations

import base64
import os
import time

from pipeline.fileid import FileState
from pipeline.message import Item


class Tail:
    def __init__(self, path: str, fd: int, state: FileState, service: str, max_line: int) -> None:
        self.path, self.fd, self.state = path, fd, state
        self.service, self.max_line = service, max_line
        self.pos = state.offset  # bytes of the file read so far
        self.buf = b""  # read bytes after the last complete line
        self.skip: list[object] | None = None  # [start, head, length] of an over-long line
        self.pending: list[Item] = []  # lines read, not yet committed
        self.pending_end = state.offset  # offset just past the last pending line
        self.orphan_since: float | None = None  # when the path stopped pointing here
        self.last_growth = time.monotonic()

    @property
    def key(self) -> str:
        return self.state.key

    def restart_from_zero(self) -> None:
        """The file was truncated (or rewritten): read it again from the start."""
        self.pos, self.buf, self.skip, self.pending_end = 0, b"", None, 0

    def read(self, budget: int) -> int:
        """Read up to ``budget`` bytes, appending complete lines to ``pending``; bytes read."""
        data = os.pread(self.fd, budget, self.pos)
        if not data:
            return 0
        self.last_growth = time.monotonic()
        base = self.pos
        self.pos += len(data)
        if self.skip is not None:
            newline = data.find(b"\n")
            if newline < 0:
                self.skip[2] = int(self.skip[2]) + len(data)  # type: ignore[call-overload]
                return len(data)
            start, head, length = self.skip
            self._append(bytes(head), int(start), int(length) + newline)  # type: ignore[call-overload]
            self.skip = None
            base += newline + 1
            data = data[newline + 1:]
            self.pending_end = base
        chunk_start = base - len(self.buf)
        chunk = self.buf + data if self.buf else data
        last = chunk.rfind(b"\n")
        if last < 0:
            self.buf = chunk
        else:
            self.buf = chunk[last + 1:]
            self._split(chunk[:last], chunk_start)
            self.pending_end = chunk_start + last + 1
        if len(self.buf) > self.max_line:
            self.skip = [self.pos - len(self.buf), self.buf[: self.max_line], len(self.buf)]
            self.buf = b""
        return len(data)

    def flush_partial(self) -> None:
        """Emit a final line that never got its newline (the file was rotated away)."""
        if self.skip is not None:
            start, head, length = self.skip
            self._append(bytes(head), int(start), int(length))  # type: ignore[call-overload]
            self.skip = None
        elif self.buf:
            self._append(self.buf, self.pos - len(self.buf), 0)
            self.buf = b""
        else:
            return
        self.pending[-1]["partial"] = True
        self.pending_end = self.pos

    def _split(self, block: bytes, offset: int) -> None:
        service, sid, max_line, out = self.service, self.state.sid, self.max_line, self.pending
        if block.isascii():
            for line in block.decode("ascii").split("\n"):
                size = len(line)
                if size > max_line:
                    out.append({"service": service, "logline": line[:max_line], "src": sid,
                                "off": offset, "trunc": size})
                else:
                    out.append({"service": service, "logline": line, "src": sid, "off": offset})
                offset += size + 1
            return
        for raw in block.split(b"\n"):
            size = len(raw)
            self._append(raw[:max_line], offset, size if size > max_line else 0)
            offset += size + 1

    def _append(self, raw: bytes, offset: int, truncated_from: int) -> None:
        item: Item = {"service": self.service, "src": self.state.sid, "off": offset}
        try:
            item["logline"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            item["logline"] = raw.decode("utf-8", "backslashreplace")
            item["raw_b64"] = base64.b64encode(raw).decode("ascii")
        if truncated_from:
            item["trunc"] = truncated_from
        self.pending.append(item)

    def close(self) -> None:
        os.close(self.fd)
