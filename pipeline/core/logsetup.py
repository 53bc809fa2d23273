"""loglines' own logging: one line per record, untrusted text escaped."""

from __future__ import annotations

import logging
import sys

_ESCAPES = {i: f"\\x{i:02x}" for i in range(32)} | {ord("\n"): "\\n", ord("\r"): "\\r", 127: "\\x7f"}


def safe(text: object, limit: int = 300) -> str:
    """Untrusted text fit for a log line: control characters (CR/LF too) escaped, length capped."""
    value = str(text)
    if len(value) > limit:
        value = value[:limit] + f"...[{len(value) - limit} more]"
    return value.translate(_ESCAPES)


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head, sep, tail = text.partition("\n")  # tracebacks stay readable, one record each
        return head.replace("\r", "\\r") + (sep + tail if sep else "")


def setup(level: str = "info", name: str = "loglines") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    return logging.getLogger(name)
